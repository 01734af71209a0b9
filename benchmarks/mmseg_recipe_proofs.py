"""Every mmsegmentation recipe shipped here against mmseg's own config file of the same name.

Runs only in the peer environment (PyTorch, mmengine, mmcv-lite, mmsegmentation 1.2.2):

    bash benchmarks/setup_peer_env.sh
    .venv-peers/bin/python benchmarks/mmseg_recipe_proofs.py                 # every recipe, a table
    .venv-peers/bin/python benchmarks/mmseg_recipe_proofs.py --only NAME...  # the groups of some
    .venv-peers/bin/python benchmarks/mmseg_recipe_proofs.py --write         # + tests/fixtures/mmseg/proven_recipes.json
    .venv-peers/bin/python -m pytest tests/test_peer_mmseg.py -q -s -k every_recipe

The recipes are found on disk (``configs/<model>/mmseg/*.yml``), so a new one is covered
without listing it. They are grouped by what decides their eval logits and test-time
inference, read from both config files: mmseg's ``model`` (less ``pretrained``) and
``test_pipeline``, and our ``model``, ``val_dataset.transforms`` and ``test_config``. Two
recipes of one group differ only in their training schedule (e.g. 40k / 80k iterations, or
``amp``), or are two datasets tested alike (Potsdam and Vaihingen); one recipe per group is
run, a group of one is the recipe itself. For it:

* mmseg's model is built from the wheel's config file (SyncBN as BN, no pretrained weights),
  given random weights and random BatchNorm statistics (``mmseg_checkpoints.random_state``),
  saved as the model zoo's files are (``{'meta', 'state_dict'}``, torch's legacy layout),
  loaded through ``load_model_weights`` (what ``--model_path`` uses) into the recipe's model,
  and mmseg's ``encode_decode`` logits are compared with ours at :data:`SIZES` in float32;
* the test-time path: mmseg's ``inference_model`` (its ``test_pipeline``: keep-ratio resize,
  then the model's ``test_cfg``, whole image or sliding window, and the resize of the logits
  back to the image) against ours as ``tools/val.py`` runs it (the recipe's val transforms,
  ``test_config`` and ``predict_logits`` on the model the execution policy prepares for
  inference), on one :data:`IMAGE`-sized PNG read from disk by both. To keep this cheap on
  a CPU the test resize, the window and the stride are divided by the same factor on both
  sides (:func:`scale_factor`: the resize's short side becomes :data:`TEST_SIDE`);
* the main suite's key/shape list of the recipe (:func:`recipe_keys`, from the committed
  fixtures) is mmseg's state dict of that config, key for key.

``--write`` records each recipe checked, which parts agreed (``agrees``: ``logits``,
``inference``) and the measured figures, in :data:`PROVEN`; ``tools/zoo/mmseg_recipes.py`` and the README tables read
it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402

#: Where the recipes proven here are recorded (read by tools/zoo/mmseg_recipes.py).
PROVEN = mc.FIXTURES / "proven_recipes.json"
#: Input sizes (H, W) of the logits comparison: a multiple of 32, and an odd size whose d8
#: map is 9x13 (PSAHead's odd-size shrink; PointRend's subdivision overshoots it).
SIZES = ((64, 96), (65, 97))
#: (H, W) of the image of the test-time comparison: every test resize here changes its size.
IMAGE = (50, 75)
#: Short side of the scaled-down test resize (see :func:`scale_factor`).
TEST_SIDE = 64
#: The issue's criterion: max abs diff <= 1e-5 of the largest logit magnitude, float32.
RELATIVE = 1e-5


def recipes() -> Dict[str, Path]:
    """Every mmseg recipe shipped: ``{mmseg config name: path}``."""
    return {p.stem: p for p in sorted(ROOT.glob("configs/*/mmseg/*.yml")) if p.parts[-3] != "_base_"}


def fixture_for(name: str) -> Path:
    """The committed key/shape list of the network ``name`` builds, classes aside.

    Networks that differ by dataset beyond the classifiers (PSANet's 66x66 ADE20K masks,
    PointRend's point head, whose layers take the coarse logits) have a list per dataset;
    the others share their Cityscapes list.
    """
    own = mc.FIXTURES / f"{mc.fixture_name(name)}.json"
    return own if own.is_file() else mc.FIXTURES / f"{name.split('_4xb')[0]}.json"


def recipe_keys(name: str, num_classes: int) -> Dict[str, List[int]]:
    """mmseg's key/shape list of the config ``name`` with ``num_classes`` classes (NumPy only):
    its committed list with the classifiers (``conv_seg``) resized."""
    path = fixture_for(name)
    if not path.is_file():
        raise FileNotFoundError(f"no committed mmseg key/shape list for {name} ({path.name}): run "
                                ".venv-peers/bin/python benchmarks/mmseg_recipe_proofs.py --fixtures")
    keys = json.loads(path.read_text())["keys"]
    return {k: [num_classes, *v[1:]] if k.rsplit(".", 2)[-2].endswith("conv_seg") else v for k, v in keys.items()}


def write_key_fixtures(names: Sequence[str]) -> List[Path]:
    """Commit mmseg's key/shape list wherever :func:`recipe_keys` of a recipe in ``names`` is
    not mmseg's: the network's list (``<model>_<backbone>.json``) when it has none, else a list
    for the dataset (``mc.fixture_name``). Cityscapes 512x1024 recipes go first, so a network's
    own list is its Cityscapes one. Returns the files written."""
    written = []
    for name in sorted(names, key=lambda n: (not n.endswith("cityscapes-512x1024"), n)):
        peer = mc.peer_model(name)
        keys = mc.key_shapes_of(peer)
        base = mc.FIXTURES / f"{name.split('_4xb')[0]}.json"
        if base.is_file() and recipe_keys(name, peer.num_classes) == keys:
            continue
        path = base if not base.is_file() else mc.FIXTURES / f"{mc.fixture_name(name)}.json"
        if path.is_file():
            raise ValueError(f"{path.name} exists but is not mmseg's list of {name}: rerun "
                             "benchmarks/mmseg_checkpoints.py --fixtures, or remove it")
        doc = {"peer": "mmsegmentation 1.2.2 (mmcv-lite 2.1.0)", "config": name,
               "recipe": str(recipes()[name].relative_to(ROOT)),
               "made_by": "benchmarks/mmseg_recipe_proofs.py --fixtures", "keys": keys}
        path.write_text(json.dumps(doc, indent=0) + "\n")
        written.append(path)
    return written


# ----------------------------------------------------------------- grouping
def peer_config(name: str) -> Any:
    from mmengine.config import Config

    return Config.fromfile(str(mc.peer_config_path(name)))


def peer_signature(cfg: Any) -> str:
    model = cfg.model.to_dict()
    model.pop("pretrained", None)
    return json.dumps({"model": model, "test_pipeline": cfg.test_pipeline}, sort_keys=True, default=str)


def our_signature(path: Path) -> str:
    from paddleseg_ext.cvlibs import Config

    d = Config(str(path)).dic
    return json.dumps([d["model"], d["val_dataset"]["transforms"], d.get("test_config")], sort_keys=True)


def groups(names: Optional[Sequence[str]] = None) -> List[List[str]]:
    """The recipes (all, or ``names``) grouped by their eval function on both sides; each group
    sorted, the first of it is the one run."""
    found = recipes()
    out: Dict[Tuple[str, str], List[str]] = {}
    for name in (names or found):
        key = (peer_signature(peer_config(name)), our_signature(found[name]))
        out.setdefault(key, []).append(name)
    return sorted(sorted(g) for g in out.values())


# ------------------------------------------------------------ test-time path
def scale_factor(cfg: Any) -> float:
    """By how much the test resize, window and stride are divided: the resize's short side
    becomes :data:`TEST_SIDE` (1 if mmseg's pipeline has no resize)."""
    for t in cfg.test_pipeline:
        if t["type"] == "Resize":
            return min(t["scale"]) / TEST_SIDE
    return 1.0


def _scaled(values: Sequence[int], factor: float) -> List[int]:
    return [max(1, int(round(v / factor))) for v in values]


def peer_inference(peer: Any, cfg: Any, image: Path, factor: float, float_image: bool = True) -> np.ndarray:
    """mmseg's ``inference_model`` logits ``[K, H, W]`` of ``image`` (its own pipeline, test
    resize, window and stride divided by ``factor``).

    ``float_image``: load the image as float32 (mmseg's ``LoadImageFromFile(to_float32=True)``)
    so that its test resize interpolates in float32 as ours does; mmseg's default resizes the
    8-bit image (OpenCV's fixed-point bilinear, rounded to 8 bits), up to one grey level from
    the float32 resize.
    """
    from mmseg.apis import inference_model

    cfg = copy.deepcopy(cfg)
    for t in cfg.test_pipeline:
        if t["type"] == "Resize":
            t["scale"] = tuple(_scaled(t["scale"], factor))
        if t["type"] == "LoadImageFromFile" and float_image:
            t["to_float32"] = True
    test_cfg = peer.test_cfg
    peer.test_cfg = copy.deepcopy(test_cfg)
    if peer.test_cfg.get("mode") == "slide":
        peer.test_cfg.crop_size = tuple(_scaled(peer.test_cfg.crop_size, factor))
        peer.test_cfg.stride = tuple(_scaled(peer.test_cfg.stride, factor))
    peer.cfg = cfg
    try:
        return inference_model(peer, str(image)).seg_logits.data.numpy()
    finally:
        peer.test_cfg = test_cfg


def our_inference(ours: Any, path: Path, image: Path, factor: float) -> np.ndarray:
    """Our val-time logits ``[K, H, W]`` of ``image`` with the recipe ``path`` (its val
    transforms and ``test_config``, resize, window and stride divided by ``factor``)."""
    import paddle

    from paddleseg_ext.core.infer import predict_logits
    from paddleseg_ext.cvlibs import Config, SegBuilder
    from paddleseg_ext.runtime import current_policy, prepare
    from paddleseg_ext.transforms import Compose
    from paddleseg_ext.utils.infer_options import InferOptions

    cfg = Config(str(path))
    for t in cfg.dic["val_dataset"]["transforms"]:
        if t["type"] == "Resize":
            t["target_size"] = _scaled(t["target_size"], factor)
    test = cfg.dic.get("test_config") or {}
    for key in ("crop_size", "stride"):
        if test.get(key):
            test[key] = _scaled(test[key], factor)
    builder = SegBuilder(cfg)
    data = Compose(builder.val_transforms, img_channels=builder.img_channels)(
        {"img": str(image), "trans_info": [], "gt_fields": []})
    options = InferOptions.from_config(cfg.test_config, str(path))
    net = prepare(ours, current_policy().replace(target="infer"))
    with paddle.no_grad():
        return predict_logits(net, paddle.to_tensor(data["img"][None]), data["trans_info"], options).numpy()[0]


def _our_resizes(path: Path) -> bool:
    from paddleseg_ext.cvlibs import Config

    return any(t["type"] == "Resize" for t in Config(str(path)).dic["val_dataset"]["transforms"])


def write_image(path: Path, seed: int, size: Tuple[int, int] = IMAGE) -> None:
    """A smooth random colour image of ``size`` (H, W): noise upsampled, so that a resize
    changes it by a fraction of its range, as for a photograph."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (size[0] // 5 + 1, size[1] // 5 + 1, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 8, img.shape)
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------- labels
def label_rules(name: str, tmp: Path) -> Dict[str, Any]:
    """The recipe's dataset labels on both sides: class count, ignore index, and what each raw
    label value 0..255 becomes (mmseg's test ``LoadAnnotations`` with its dataset's
    ``reduce_zero_label``; our val dataset's ``convert_label``). No image or model is needed.

    Returns ``{"peer": (classes, ignore_index, mapped), "ours": (...)}``, ``mapped`` the 256
    values as a list.
    """
    import inspect

    import cv2

    from paddleseg_ext.cvlibs import Config, manager
    from paddleseg_ext.transforms.loading import read_label

    mc._mmcv_ops_stand_in()
    from mmseg.registry import DATASETS, TRANSFORMS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = peer_config(name)
    ds = cfg.test_dataloader.dataset
    peer_cls = DATASETS.get(ds.type)

    def default(arg: str) -> Any:  # the nearest class of the dataset's MRO that names ``arg``
        return next(p[arg].default for p in (inspect.signature(c.__init__).parameters
                                             for c in peer_cls.__mro__) if arg in p)

    reduce = ds.get("reduce_zero_label", default("reduce_zero_label"))
    ignore = ds.get("ignore_index", default("ignore_index"))
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp / "label.png"
    cv2.imwrite(str(path), raw)
    load = TRANSFORMS.build(dict(next(t for t in cfg.test_pipeline if t["type"] == "LoadAnnotations")))
    peer = load({"seg_map_path": str(path), "reduce_zero_label": reduce, "seg_fields": []})["gt_seg_map"]
    ours_cfg = Config(str(recipes()[name])).dic["val_dataset"]
    ours_cls = manager.DATASETS.get(ours_cfg["type"])
    dataset = ours_cls.__new__(ours_cls)  # only its label rule: no files are read
    dataset.ignore_index = ours_cfg.get("ignore_index", 255)
    ours = dataset.convert_label(read_label(str(path)))
    return {"peer": (len(peer_cls.METAINFO["classes"]), ignore, peer.ravel().tolist()),
            "ours": (ours_cfg.get("num_classes", ours_cls.NUM_CLASSES), dataset.ignore_index,
                     np.asarray(ours).ravel().tolist())}


# ----------------------------------------------------------------- one check
def check(name: str, tmp: Path, seed: int = 0) -> Dict[str, Any]:
    """Compare the recipe ``name`` with mmseg's config of that name (see the module docstring).

    Returns ``{"logits": [[H, W, max abs diff, max |logit|]...], "inference": [H, W, max abs
    diff, max |logit|], "test": what the test-time path ran, "image_at_test_scale": whether the
    image had mmseg's (scaled) test size, "keys": whether the main suite's key/shape list is
    mmseg's}``.
    """
    from paddleseg_ext.checkpoints.weights import load_model_weights

    path = recipes()[name]
    cfg = peer_config(name)
    peer = mc.randomized_peer(name, seed)
    num_classes = peer.num_classes  # the last decode head's (a cascade's: PointRend's point head)
    file = tmp / f"{name}.pth"
    mc.save_like_mmseg(peer, file, "mmcv1")
    ours = mc.recipe_model(path)
    load_model_weights(ours, str(file))
    file.unlink()
    out: Dict[str, Any] = {"logits": [],
                           "keys": recipe_keys(name, num_classes) == mc.key_shapes_of(peer)}
    for i, size in enumerate(SIZES):
        x = mc.random_input(size, seed + 100 + i)
        want, got = mc.peer_logits(peer, x), mc.our_logits(ours, x)
        if got.shape != want.shape:
            raise AssertionError(f"{name} {size}: our logits {got.shape}, mmseg's {want.shape}")
        out["logits"].append([*size, float(np.abs(got - want).max()), float(np.abs(want).max())])
    factor = scale_factor(cfg)
    size = IMAGE
    if not _our_resizes(path) and any(t["type"] == "Resize" for t in cfg.test_pipeline):
        # Our recipe does not resize at test time (the Cityscapes 512x1024 ones: every
        # Cityscapes image is mmseg's test scale, 2048x1024): compare on an image of that scale.
        size = tuple(_scaled(next(t["scale"] for t in cfg.test_pipeline if t["type"] == "Resize"),
                             factor))[::-1]
    image = tmp / "image.png"
    write_image(image, seed, size)
    want = peer_inference(peer, cfg, image, factor)
    got = our_inference(ours, path, image, factor)
    if got.shape != want.shape:
        raise AssertionError(f"{name} test-time path: our logits {got.shape}, mmseg's {want.shape}")
    out["inference"] = [*want.shape[1:], float(np.abs(got - want).max()), float(np.abs(want).max())]
    out["test"] = describe_test(cfg, factor)
    out["image_at_test_scale"] = size != IMAGE
    return out


def describe_test(cfg: Any, factor: float) -> str:
    resize = [t for t in cfg.test_pipeline if t["type"] == "Resize"]
    text = f"resize {tuple(resize[0]['scale'])} -> {tuple(_scaled(resize[0]['scale'], factor))}" if resize \
        else "no resize"
    test_cfg = cfg.model.get("test_cfg") or {}
    if test_cfg.get("mode") == "slide":
        text += (f", slide {tuple(test_cfg['crop_size'])}/{tuple(test_cfg['stride'])} -> "
                 f"{tuple(_scaled(test_cfg['crop_size'], factor))}/{tuple(_scaled(test_cfg['stride'], factor))}")
    else:
        text += ", whole"
    return text


def within(row: Sequence[float]) -> bool:
    """``[..., max abs diff, max |logit|]`` meets :data:`RELATIVE` (on logits that mean something)."""
    *_, diff, scale = row
    return scale > 0.1 and diff <= RELATIVE * scale


def passed(result: Mapping[str, Any]) -> Dict[str, bool]:
    """Which parts of :func:`check`'s ``result`` agree with mmseg."""
    return {"logits": bool(result["keys"]) and all(map(within, result["logits"])),
            "inference": within(result["inference"])}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", metavar="CONFIG", help="the groups of these recipes only")
    ap.add_argument("--write", action="store_true", help=f"record what passed in {PROVEN.relative_to(ROOT)}")
    ap.add_argument("--fixtures", action="store_true",
                    help="commit mmseg's key/shape lists the recipes lack (tests/fixtures/mmseg/)")
    args = ap.parse_args(argv)
    if args.fixtures:
        for path in write_key_fixtures(args.only or list(recipes())):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    start = time.perf_counter()
    todo = groups()
    if args.only:
        todo = [g for g in todo if set(g) & set(args.only)]
    print(f"{sum(map(len, todo))} recipes in {len(todo)} groups ({time.perf_counter() - start:.0f} s to group)",
          flush=True)
    proven = json.loads(PROVEN.read_text())["recipes"] if PROVEN.is_file() else {}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for group in todo:
            t0 = time.perf_counter()
            result = check(group[0], Path(tmp))
            verdict = passed(result)
            ok = all(verdict.values())
            failed += not ok
            ratios = [diff / scale for *_, diff, scale in result["logits"]]
            h, w, diff, scale = result["inference"]
            print(f"{'ok  ' if ok else 'FAIL'} {group[0]:50s} (+{len(group) - 1}) logits ratio "
                  f"{max(ratios):.2g}; test-time {h}x{w} ratio {diff / scale:.2g} [{result['test']}]; "
                  f"keys {'=' if result['keys'] else '!='} fixture; {time.perf_counter() - t0:.0f} s",
                  flush=True)
            for name in group:
                proven[name] = {"run_as": group[0], "agrees": verdict, **result}
    print(f"total {time.perf_counter() - start:.0f} s, {failed} group(s) failed", flush=True)
    if args.write:
        doc = {"peer": "mmsegmentation 1.2.2 (mmcv-lite 2.1.0)",
               "made_by": "benchmarks/mmseg_recipe_proofs.py --write",
               "criterion": f"max abs diff <= {RELATIVE} x max |logit|, float32",
               "sizes": [list(s) for s in SIZES], "image": list(IMAGE),
               "recipes": dict(sorted(proven.items()))}
        PROVEN.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {PROVEN.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
