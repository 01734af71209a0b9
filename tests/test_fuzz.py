"""Seeded fuzzing: 1,000 random configs and 1,000 random image / label pairs.

Configs go through ``Config`` (YAML, ``_base_``), ``apply_opts`` and the
builder's validation (``SegBuilder.validate`` + the cheap builds: loss, LR
schedule, transforms, the file-list dataset); no model is built. The only
exceptions allowed are the documented ones -- ``ConfigError`` /
``ValueError`` / ``FileNotFoundError`` -- with a message that says where.

Image / label pairs of odd sizes, dtypes and channel counts go through
``Compose`` and a random pipeline of every registered transform: no other
exception, image and label stay the same size, labels keep only the input
values and the padding value; for exact geometric pipelines the image (built
from the label) still equals the label pixel for pixel.

The generator is seeded: a failure names the case number, which reproduces it.
"""

import copy
import inspect
import random

import numpy as np
import pytest
import yaml

from paddleseg_ext import transforms as T
from paddleseg_ext.cvlibs import ComponentBuilder, Config, ConfigError, SegBuilder, manager
from paddleseg_ext.cvlibs.config import apply_opts
from tiny_config import write_tiny_config

N_CONFIGS = 1000
N_SAMPLES = 1000
ALLOWED = (ConfigError, ValueError, FileNotFoundError)


# --------------------------------------------------------------------------- #
# Configs
# --------------------------------------------------------------------------- #
VALUES = ["abc", "", -1, 0, 1, 3, 2.5, -0.5, 1e10, float("nan"), float("inf"), True, False, None, [],
          [1], [0, 0], [1, 2, 3], ["x"], [[1]], {}, {"a": 1}, {"type": "Nope"}, {"type": "Normalize"},
          "1e-4", "données 数据", "x" * 300, [None], [{"type": "RandomHorizontalFlip"}], 255, 254]


def _paths(node, prefix=()):
    """Every key path (tuples) in a nested dict / list."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _parent(dic, path):
    node = dic
    for p in path[:-1]:
        node = node[p]
    return node


def _typo(word, rng):
    word = str(word)
    if len(word) < 2:
        return word + "x"
    i = rng.randrange(len(word))
    op = rng.randrange(3)
    if op == 0:
        return word[:i] + word[i + 1:]
    if op == 1:
        return word[:i] + rng.choice("abcxyz_") + word[i:]
    return word.upper() if word.lower() == word else word.lower()


def mutate(base, rng):
    """A random, usually broken, variant of the config dict (and maybe some --opts)."""
    dic = copy.deepcopy(base)
    opts = []
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(dic))
        kind = rng.randrange(8)
        if not paths:
            break
        path = rng.choice(paths)
        parent = _parent(dic, path)
        key = path[-1]
        if kind == 0:  # delete
            del parent[key]
        elif kind in (1, 2):  # wrong value
            parent[key] = copy.deepcopy(rng.choice(VALUES))
        elif kind == 3 and isinstance(parent, dict):  # unknown key next to real ones
            parent[_typo(key, rng)] = copy.deepcopy(rng.choice(VALUES))
        elif kind == 4:  # another / misspelt type
            types = [p for p in paths if p[-1] == "type"]
            if types:
                tpath = rng.choice(types)
                names = [n for reg in manager.ALL_REGISTRIES for n in reg]
                tparent = _parent(dic, tpath)
                tparent["type"] = _typo(tparent["type"], rng) if rng.random() < 0.5 else rng.choice(names)
        elif kind == 5:  # an --opts override, sometimes malformed
            dotted = ".".join(str(p) for p in path)
            val = rng.choice(VALUES)
            form = rng.randrange(4)
            opts.append({0: f"{dotted}={yaml.safe_dump(val, default_flow_style=True).strip()}",
                         1: f"{_typo(dotted, rng)}=1", 2: dotted, 3: f"{dotted}.9.x=1"}[form])
        elif kind == 6:  # a number where a list is expected and vice versa
            if isinstance(parent[key], list):
                parent[key] = len(parent[key])
            elif isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
                parent[key] = [parent[key]] * rng.randint(0, 3)
        else:  # swap two sections
            keys = list(dic)
            a, b = rng.sample(keys, 2) if len(keys) > 1 else (keys[0], keys[0])
            dic[a], dic[b] = dic[b], dic[a]
    return dic, opts


def raw_text_cases(tmp_path, rng, case):
    """File-level breakage: YAML syntax, empty, non-mapping, _base_ problems."""
    text = yaml.safe_dump({"iters": 1})
    choice = case % 7
    p = tmp_path / f"raw_{case}.yml"
    if choice == 0:
        text = "iters: 1\nmodel: {type: [\n"
    elif choice == 1:
        text = rng.choice(["", "# nothing\n", "---\n", "null\n"])
    elif choice == 2:
        text = rng.choice(["- 1\n- 2\n", "just text\n", "42\n"])
    elif choice == 3:
        text = f"_base_: raw_{case}.yml\n"
    elif choice == 4:
        text = f"_base_: {rng.choice(['missing.yml', 5, [1], '../../nope/x.yml'])}\n"
    elif choice == 5:
        p.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 60))))
        return str(p)
    else:
        text = "iters: 1\n  batch_size: 2\n"
    p.write_text(text)
    return str(p)


def check_message(e, case):
    assert isinstance(e, ALLOWED), f"case {case}: {type(e).__name__}: {e}"
    msg = str(e)
    assert msg.strip(), f"case {case}: empty message from {type(e).__name__}"
    assert "Traceback" not in msg, f"case {case}: {msg}"
    if type(e) is ValueError:  # a component's own check: the builder adds where it is
        assert " (at " in msg or "Padding" in msg or "channels" in msg or "Normalize" in msg, \
            f"case {case}: {msg}"


def test_fuzz_configs(tmp_path):
    cfg_path, _ = write_tiny_config(tmp_path, iters=4)
    base = yaml.safe_load(open(cfg_path))
    rng = random.Random(1234)
    outcomes = {"ok": 0}
    for case in range(N_CONFIGS):
        opts = []
        if case % 10 == 9:
            path = raw_text_cases(tmp_path, rng, case)
        else:
            dic, opts = mutate(base, rng)
            path = str(tmp_path / f"c{case}.yml")
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(dic, f, allow_unicode=True)
        try:
            cfg = Config(path, opts=opts)
            apply_opts(cfg.dic, [])
            b = SegBuilder(cfg)
            b.validate()
            if cfg.dic.get("train_dataset") is not None:
                b.train_dataset  # noqa: B018  (reads only the file list)
            outcomes["ok"] += 1
        except Exception as e:  # noqa: B902 - the point of the test
            check_message(e, case)
            outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1
    # the generator breaks most configs, but not all, and in many ways
    assert outcomes["ok"] > 20 and outcomes.get("ConfigError", 0) > 300, outcomes


# --------------------------------------------------------------------------- #
# Images, labels and transforms
# --------------------------------------------------------------------------- #
def random_transform(rng, channels, exact, lpv):
    """One transform with random valid arguments (exact: reversible geometry only)."""
    size = lambda: [rng.randint(1, 40), rng.randint(1, 40)]  # noqa: E731
    pad = lpv if exact else (rng.choice([0.0, 127.5, [float(v) for v in range(channels)]]))
    if exact:
        kind = rng.choice(["hflip", "vflip", "crop", "padding", "resize"])
    else:
        kind = rng.choice(["hflip", "vflip", "crop", "padding", "resize", "long", "short", "step", "range",
                           "rotate", "distort", "blur", "normalize"])
    if kind == "hflip":
        return T.RandomHorizontalFlip(prob=rng.random())
    if kind == "vflip":
        return T.RandomVerticalFlip(prob=rng.random())
    if kind == "crop":
        return T.RandomPaddingCrop(crop_size=size(), im_padding_value=pad, label_padding_value=lpv,
                                   category_max_ratio=rng.choice([1.0, 0.75]), ignore_index=lpv)
    if kind == "padding":
        return T.Padding(target_size=[64, 64], im_padding_value=pad, label_padding_value=lpv)
    if kind == "resize":
        return T.Resize(target_size=size(), keep_ratio=rng.random() < 0.3,
                        size_divisor=rng.choice([None, 1, 4]),
                        interp="NEAREST" if exact else rng.choice(["LINEAR", "NEAREST", "CUBIC", "AREA",
                                                                   "LANCZOS4", "RANDOM"]))
    if kind == "long":
        return T.ResizeByLong(long_size=rng.randint(1, 40))
    if kind == "short":
        return T.ResizeByShort(short_size=rng.randint(1, 40))
    if kind == "step":
        lo = rng.uniform(0.1, 2.0)
        return T.ResizeStepScaling(lo, lo + rng.uniform(0, 1.0), rng.choice([0.0, 0.25]))
    if kind == "range":
        lo = rng.randint(1, 40)
        return T.ResizeRangeScaling(lo, lo + rng.randint(0, 20))
    if kind == "rotate":
        return T.RandomRotation(max_rotation=rng.uniform(0, 90), im_padding_value=pad, label_padding_value=lpv)
    if kind == "distort":
        p = lambda: rng.random()  # noqa: E731
        return T.RandomDistort(brightness_prob=p(), contrast_prob=p(), saturation_prob=p(), hue_prob=p(),
                               sharpness_prob=p())
    if kind == "blur":
        return T.RandomBlur(prob=rng.random(), blur_type=rng.choice(["gaussian", "median", "blur", "random"]))
    return T.Normalize(mean=[0.5] * channels, std=[0.5] * channels)


def random_pair(rng, nprng, exact):
    h, w = rng.randint(1, 37), rng.randint(1, 37)
    classes = rng.randint(1, 6)
    label = nprng.integers(0, classes, size=(h, w))
    if rng.random() < 0.3:
        label[nprng.random((h, w)) < 0.1] = 255
    label = label.astype(rng.choice([np.uint8, np.int32, np.int64] if exact else
                                    [np.uint8, np.uint16, np.int32, np.int64, np.int16]))
    if exact:
        channels = rng.choice([1, 3, 4])
        img = np.repeat(label.astype(np.float32)[..., None], channels, axis=2)
        img_channels = 3 if channels in (1, 3, 4) else channels
        if channels == 1 and rng.random() < 0.5:
            img = img[..., 0]
        return img, label, img_channels
    channels = rng.choice([1, 2, 3, 4, 5])
    dtype = rng.choice([np.uint8, np.uint16, np.float32, np.float64, np.int32])
    hi = {np.uint8: 255, np.uint16: 65535, np.int32: 1000}.get(dtype, 255.0)
    img = (nprng.random((h, w, channels)) * hi).astype(dtype)
    if channels == 1 and rng.random() < 0.5:
        img = img[..., 0]
    img_channels = 3 if (channels in (1, 3, 4) and rng.random() < 0.8) or rng.random() < 0.05 else channels
    if rng.random() < 0.1:
        label = label[..., None]  # HxWx1 label
    return img, label, img_channels


def test_fuzz_transforms():
    rng = random.Random(99)
    nprng = np.random.default_rng(99)
    np.random.seed(99)
    random.seed(99)
    counts = {"ok": 0, "exact": 0}
    for case in range(N_SAMPLES):
        exact = case % 3 == 0
        img, label, img_channels = random_pair(rng, nprng, exact)
        lpv = 255
        ops = [random_transform(rng, img_channels, exact, lpv) for _ in range(rng.randint(0, 6))]
        before = set(np.unique(label).tolist()) | {lpv}
        data = {"img": img.copy(), "label": label.copy(), "gt_fields": ["label"], "trans_info": []}
        try:
            out = T.Compose(ops, img_channels=img_channels)(data)
        except Exception as e:  # noqa: B902
            check_message(e, case)
            known = ("channels", "Padding: image size", "im_padding_value has", "Normalize")
            assert any(k in str(e) for k in known), f"case {case}: {type(e).__name__}: {e}"
            continue
        o_img, o_lab = out["img"], out["label"]
        assert o_img.dtype == np.float32 and o_img.ndim == 3 and o_img.shape[0] == img_channels, case
        assert np.isfinite(o_img).all(), case
        assert o_lab.dtype == np.int64 and o_lab.shape == o_img.shape[1:], (case, o_lab.shape, o_img.shape)
        assert set(np.unique(o_lab).tolist()) <= before, case
        if exact:
            np.testing.assert_array_equal(o_img[0], o_lab.astype(np.float32), err_msg=f"case {case} {ops}")
            counts["exact"] += 1
        counts["ok"] += 1
    assert counts["ok"] > 0.8 * N_SAMPLES and counts["exact"] > 250, counts


@pytest.mark.parametrize("seed", range(3))
def test_fuzz_transform_constructors(seed):
    """Random (often wrong) arguments through the config builder: a transform is built, or a
    ConfigError / ValueError names it and says why."""
    rng = random.Random(seed)
    names = [n for n in manager.TRANSFORMS if n != "Compose"]
    builder = ComponentBuilder()
    for case in range(200):
        name = rng.choice(names)
        cls = manager.TRANSFORMS.get(name)
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        picked = rng.sample(params, min(len(params), rng.randint(0, 3)))
        cfg = {"type": name, **{p: copy.deepcopy(rng.choice(VALUES)) for p in picked}}
        if rng.random() < 0.2:
            cfg[_typo(rng.choice(params), rng)] = 1
        try:
            builder.build(cfg, "train_dataset.transforms.0")
        except Exception as e:  # noqa: B902
            assert isinstance(e, ALLOWED), f"{cfg}: {type(e).__name__}: {e}"
            assert name in str(e) or "at train_dataset.transforms.0." in str(e), f"{cfg}: {e}"
