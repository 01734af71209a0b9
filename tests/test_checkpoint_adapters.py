"""Peer checkpoints (PaddleSeg 2.x) converted exactly, guarded without PaddleSeg.

The key/shape lists in ``tests/fixtures/paddleseg/`` were taken from
PaddleSeg 2.8's own models (``benchmarks/peer_checkpoints.py --fixtures`` in
``.venv-bench``); ``tests/test_peer_checkpoints.py`` proves the logits equal
PaddleSeg's there. Here a synthetic state dict with those keys and shapes
(random values) must convert with every tensor placed and every model key
filled, the exact rules (bias folding, PPM branch order) are checked
numerically, and a file that does not fit gets one clear error.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from paddleseg_ext.checkpoints import adapters
from paddleseg_ext.checkpoints.adapters import base, fold_bias_into_bn, to_native
from paddleseg_ext.checkpoints.adapters.paddleseg import _reverse_branch_order
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.models.layers import PPModule
from paddleseg_ext.checkpoints.weights import load_model_weights
from paddleseg_ext.utils.pretrained import load_pretrained
import tolerance as tol

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "paddleseg"
FIXTURE_FILES = sorted(p.name for p in FIXTURES.glob("*.json"))


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def synthetic_state(doc, seed=0):
    rng = np.random.default_rng(seed)
    state = {}
    for k, shape in doc["keys"].items():
        v = rng.normal(0, 1, shape).astype("float32")
        state[k] = np.abs(v) + 0.5 if k.endswith("_variance") else v
    return state


def classes_opts(n):
    return [f"model.num_classes={n}", f"train_dataset.num_classes={n}", f"val_dataset.num_classes={n}"]


def build(recipe, backbone="ResNet18_vd", num_classes=19, opts=()):
    opts = [f"model.backbone.type={backbone}", "model.backbone.pretrained=null",
            *classes_opts(num_classes), *opts]
    if backbone == "ResNet18_vd":
        opts.append("model.backbone.multi_grid=[1,1]")
    return SegBuilder(Config(str(ROOT / recipe), opts=opts)).model


def test_fixtures_cover_every_model_and_backbone():
    assert FIXTURE_FILES == sorted(f"{m}_{b}.json" for m in ("pspnet", "danet", "pointrend")
                                   for b in ("resnet18_vd", "resnet50_vd"))


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_paddleseg_layout_converts_whole(name, caplog):
    doc = fixture(name)
    model = build(doc["recipe"], doc["backbone"], doc["num_classes"])
    assert type(model).__name__ == doc["model"]
    state = synthetic_state(doc)
    caplog.set_level(logging.INFO, logger="paddleseg_ext")
    native, conv = to_native(state, model, source=name)
    assert conv is not None and conv.layout == f"PaddleSeg 2.x {doc['model']}"
    own = model.state_dict()
    assert set(native) == set(own)
    assert all(list(native[k].shape) == list(own[k].shape) for k in own)
    # Every peer tensor is accounted for: loaded, folded into a BN, or a never-called layer.
    assert len(native) + len(conv.folded) + len(conv.unused) == len(state)
    assert not conv.unplaced
    assert [r.getMessage() for r in caplog.records] == [f"{name}: {conv.summary()}"]
    # Backbone tensors pass through unchanged.
    k = "backbone.conv1_1._conv.weight"
    np.testing.assert_array_equal(native[k], state[k])


def converted(name):
    """``(peer state, native state, Conversion)`` for the synthetic file of fixture ``name``."""
    doc = fixture(name)
    state = synthetic_state(doc)
    return (state, *to_native(state, build(doc["recipe"])))


def test_pspnet_rules_place_the_right_values():
    state, native, conv = converted("pspnet_resnet18_vd.json")
    np.testing.assert_array_equal(native["cls.weight"], state["head.conv.weight"])
    np.testing.assert_array_equal(native["aux_head.conv.bias"], state["head.auxlayer.conv.bias"])
    p, o = "head.auxlayer.conv_bn_relu", "aux_head.conv_bn_relu"
    np.testing.assert_allclose(native[f"{o}._batch_norm._mean"],
                               state[f"{p}._batch_norm._mean"] - state[f"{p}._conv.bias"], rtol=1e-6)
    assert len(conv.folded) == 6  # 4 PPM branches, the bottleneck, the aux conv
    # PaddleSeg's aux conv is a quarter of stage 3 (64 on ResNet18), here the same by default.
    assert list(native[f"{o}._conv.weight"].shape)[0] == 64


def test_danet_rules_place_the_right_values():
    state, native, _ = converted("danet_resnet18_vd.json")
    np.testing.assert_array_equal(native["head.cam.beta"], state["head.cam.gamma"])
    np.testing.assert_array_equal(native["head.pam.gamma"], state["head.pam.gamma"])
    np.testing.assert_array_equal(native["aux_head.1.weight"], state["head.aux_head.1.weight"])
    np.testing.assert_array_equal(native["head.cam_cls.1.weight"], state["head.aux_head_cam.1.weight"])
    np.testing.assert_array_equal(native["head.pam_out._conv.weight"], state["head.conv2._conv.weight"])


def test_pointrend_rules_place_the_right_values():
    state, native, conv = converted("pointrend_resnet18_vd.json")
    np.testing.assert_array_equal(native["neck.lateral_convs.2._conv.weight"],
                                  state["neck.lateral_convs.2.0.weight"])
    np.testing.assert_array_equal(native["fpn_head.scale_heads.3.2.weight"],
                                  state["fpnhead.scale_heads.3.4._conv.weight"])
    np.testing.assert_array_equal(native["point_head.cls.weight"], state["pointhead.fc_seg.weight"])
    assert len(conv.folded) == 4  # the four lateral convs
    assert conv.unused == sorted(k for k in state if k.startswith("neck.fpn_out.3."))
    assert "5 tensors of a layer the peer never calls left out (neck.fpn_out.3.0" in conv.summary()


def test_fold_bias_into_bn_is_exact():
    paddle.seed(1)
    conv_b = nn.Conv2D(4, 6, 3, padding=1)
    bn = nn.BatchNorm2D(6)
    rng = np.random.default_rng(0)
    for name, v in (("weight", rng.uniform(0.5, 1.5, 6)), ("bias", rng.normal(0, 1, 6)),
                    ("_mean", rng.normal(0, 1, 6)), ("_variance", rng.uniform(0.5, 2, 6))):
        getattr(bn, name).set_value(v.astype("float32"))
    conv_b.bias.set_value(rng.normal(0, 3, 6).astype("float32"))
    conv = nn.Conv2D(4, 6, 3, padding=1, bias_attr=False)
    conv.weight.set_value(conv_b.weight)
    bn2 = nn.BatchNorm2D(6)
    state = {"c.bias": conv_b.bias.numpy(), **{f"bn.{k}": v.numpy() for k, v in bn.state_dict().items()}}
    fold_bias_into_bn(state, "c.bias", "bn")
    assert "c.bias" not in state
    bn2.set_state_dict({k[3:]: v for k, v in state.items()})
    bn.eval(), bn2.eval()
    x = paddle.randn([2, 4, 9, 7])
    want = bn(conv_b(x)).numpy()
    tol.assert_close(bn2(conv(x)).numpy(), want, tol.bound(max(1.0, np.abs(want).max()), 4 * 9, depth=2),
                     "bias folded into the BN mean")
    with pytest.raises(ValueError, match="cannot fold c.bias"):
        fold_bias_into_bn({"c.bias": np.zeros(3), "bn._mean": np.zeros(4)}, "c.bias", "bn")


def test_ppm_branch_order_permutation_is_paddleseg_s():
    """PaddleSeg concatenates [x, bin_n, ..., bin_1]; the reordered weight gives our output."""
    paddle.seed(2)
    ppm = PPModule(8, 5, (1, 2, 3, 6))
    ppm.eval()
    x = paddle.randn([1, 8, 12, 12])
    branches = [paddle.nn.functional.interpolate(s(x), size=[12, 12], mode="bilinear")
                for s in ppm.stages]
    peer_cat = paddle.concat([x] + branches[::-1], axis=1)
    w = ppm.bottleneck._conv.weight.numpy()
    # The peer weight that gives the same output: the inverse of the reorder (an involution).
    peer_w = _reverse_branch_order(w, 8, 4)
    np.testing.assert_array_equal(_reverse_branch_order(peer_w, 8, 4), w)
    peer_conv = paddle.nn.functional.conv2d(peer_cat, paddle.to_tensor(peer_w), padding=1)
    ours = ppm.bottleneck._conv(paddle.concat([x] + branches, axis=1))
    # The same 3x3 conv over permuted input channels: another summation order.
    tol.assert_close(peer_conv.numpy(), ours.numpy(),
                     tol.bound(max(1.0, float(paddle.abs(ours).max())), 40 * 9), "branch order")


def test_wrong_num_classes_is_one_clear_error():
    doc = fixture("pspnet_resnet18_vd.json")
    model = build(doc["recipe"], num_classes=7)
    with pytest.raises(ValueError, match=r"f\.pdparams: detected a PaddleSeg 2\.x PSPNet checkpoint, "
                                         r"but it does not fit this PSPNet: .*shape mismatches.*"
                                         r"cls\.weight \[19, 1024, 1, 1\] vs \[7, 1024, 1, 1\].*same backbone and "
                                         r"num_classes"):
        to_native(synthetic_state(doc), model, source="f.pdparams")


def test_wrong_architecture_is_one_clear_error():
    doc = fixture("pspnet_resnet18_vd.json")
    model = build("configs/danet/paddleseg/danet_resnet50_os8_cityscapes_1024x512_80k.yml")
    with pytest.raises(ValueError, match=r"detected a PaddleSeg 2\.x PSPNet checkpoint, but it does "
                                         r"not fit this DANet: \d+ checkpoint tensors with no place.*"
                                         r"psp_module.*model keys the checkpoint does not fill.*head\.pam"):
        to_native(synthetic_state(doc), model)


@pytest.mark.parametrize("name,recipe,opts,needs", [
    ("danet_resnet18_vd.json", "configs/danet/paddleseg/danet_resnet50_os8_cityscapes_1024x512_80k.yml",
     ["model.align_mode=0"], "align_mode=0"),
    ("danet_resnet18_vd.json", "configs/danet/paddleseg/danet_resnet50_os8_cityscapes_1024x512_80k.yml",
     ["model.aux_head=fcn"], "aux_head='linear'"),
    ("pointrend_resnet18_vd.json",
     "configs/pointrend/paddleseg/pointrend_resnet50_os8_cityscapes_1024x512_80k.yml",
     ["model.decoder=semantic_fpn"], "decoder='semantic_fpn'"),
])
def test_paper_variant_refuses_a_paddleseg_checkpoint_with_the_switch_to_use(name, recipe, opts, needs):
    model = build(recipe, opts=opts)
    with pytest.raises(ValueError, match=r"PaddleSeg 2\.x (DANet|PointRend)") as e:
        to_native(synthetic_state(fixture(name)), model, source="x.pdparams")
    assert needs in str(e.value) and str(e.value).startswith("x.pdparams: ")


def test_native_passes_through_and_unknown_layout_names_what_was_tried():
    model = build("configs/pspnet/paddleseg/pspnet_resnet50_os8_cityscapes_1024x512_80k.yml")
    state = model.state_dict()
    out, conv = to_native(state, model)
    assert out is state and conv is None
    partial = {k: v for k, v in state.items() if not k.startswith("cls.")}
    with pytest.raises(ValueError, match=r"in no known layout \(adapters tried: .*paddleseg\.pspnet, "
                                         r"paddleseg\.danet.*2 of \d+ model keys missing \(e\.g\. cls"):
        to_native(partial, model)
    assert to_native(partial, model, unknown="pass") == (partial, None)


def test_ambiguous_layout_is_refused(monkeypatch):
    monkeypatch.setattr(base, "_ADAPTERS", dict(base._ADAPTERS))
    adapters.register_adapter("test.greedy", lambda keys, model: True, lambda s, m: None)
    model = build("configs/pspnet/paddleseg/pspnet_resnet50_os8_cityscapes_1024x512_80k.yml")
    with pytest.raises(ValueError, match=r"match several layouts \(paddleseg\.pspnet, test\.greedy\)"):
        to_native(synthetic_state(fixture("pspnet_resnet18_vd.json")), model)
    with pytest.raises(KeyError, match="already registered"):
        adapters.register_adapter("test.greedy", lambda k, m: False, lambda s, m: None)


def test_model_path_and_model_pretrained_load_a_paddleseg_file(tmp_path):
    doc = fixture("danet_resnet18_vd.json")
    path = tmp_path / "danet.pdparams"
    paddle.save({k: paddle.to_tensor(v) for k, v in synthetic_state(doc).items()}, str(path))
    recipe = doc["recipe"]
    a = build(recipe)
    load_model_weights(a, str(path))
    b = build(recipe, opts=[f"model.pretrained={path}"])
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), b.state_dict()[k].numpy())
    # Strict under model.pretrained too: a PaddleSeg DANet does not half-load into the paper variant.
    with pytest.raises(ValueError, match="PaddleSeg 2.x DANet"):
        build(recipe, opts=[f"model.pretrained={path}", "model.aux_head=fcn"])


def test_backbone_imagenet_weights_still_load_whole():
    from paddleseg_ext.models.backbones import ResNet18_vd
    src = ResNet18_vd(output_stride=8)
    state = {k: v.numpy() + 1.0 for k, v in src.state_dict().items()}
    state["fc.weight"] = np.zeros([512, 1000], "float32")
    dst = ResNet18_vd(output_stride=8)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"h16a_bb_{os.getpid()}.pdparams"
    paddle.save(state, str(tmp))
    try:
        report = load_pretrained(dst, str(tmp))
    finally:
        tmp.unlink()
    assert len(report["loaded"]) == len(src.state_dict()) and report["unexpected"] == ["fc.weight"]
    np.testing.assert_array_equal(dst.state_dict()["conv1_1._conv.weight"].numpy(),
                                  state["conv1_1._conv.weight"])


def _run(*args):
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR", CPU_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_convert_weights_tool(tmp_path):
    doc = fixture("pspnet_resnet18_vd.json")
    src = tmp_path / "ps.pdparams"
    paddle.save({k: paddle.to_tensor(v) for k, v in synthetic_state(doc).items()}, str(src))
    cfg = str(ROOT / doc["recipe"])
    opts = ["model.backbone.type=ResNet18_vd", "model.backbone.multi_grid=[1,1]",
            "model.backbone.pretrained=null"]
    proc = _run("tools/convert_weights.py", str(src), str(tmp_path / "out.pdparams"), "--config", cfg,
                "--opts", *opts)
    assert proc.returncode == 0, proc.stderr
    assert "layout: PaddleSeg 2.x PSPNet" in proc.stdout
    assert "conv biases folded into BatchNorm: 6 (head.psp_module.stages.0.1._conv.bias" in proc.stdout
    model = build(doc["recipe"])
    load_model_weights(model, str(tmp_path / "out.pdparams"))  # native now: no conversion needed
    assert to_native(paddle.load(str(tmp_path / "out.pdparams")), model)[1] is None
    # Without --config: converted on its keys alone, and says so.
    proc = _run("tools/convert_weights.py", str(src), str(tmp_path / "out2.pdparams"))
    assert proc.returncode == 0 and "checked against: no model" in proc.stdout
    # A wrong config: one error paragraph, exit 2.
    proc = _run("tools/convert_weights.py", str(src), str(tmp_path / "bad.pdparams"), "--config", cfg,
                "--opts", *opts, *classes_opts(5))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "cls.weight" in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad.pdparams").exists()


TOOL_CONFIG = """\
_base_: {recipe}
model:
  backbone: {{type: ResNet18_vd, multi_grid: [1, 1], pretrained: null}}
train_dataset:
  _inherited_: false
  type: Dataset
  dataset_root: {root}
  train_path: {root}/train.txt
  num_classes: 19
  mode: train
  transforms: [{{type: Normalize}}]
val_dataset:
  _inherited_: false
  type: Dataset
  dataset_root: {root}
  val_path: {root}/val.txt
  num_classes: 19
  mode: val
  transforms: [{{type: Normalize}}]
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pspnet_resnet18_vd.json", "danet_resnet18_vd.json",
                                  "pointrend_resnet18_vd.json"])
def test_tools_run_on_a_paddleseg_checkpoint_with_the_zoo_recipe(name, tmp_path):
    """val / predict / export + deploy on a PaddleSeg-layout file (random values, PaddleSeg's keys)."""
    from synthetic import make_filelist_dataset

    doc = fixture(name)
    root = make_filelist_dataset(str(tmp_path / "data"), num_classes=19, n_train=1, n_val=1,
                                 size=(40, 56))
    cfg = tmp_path / "zoo.yml"
    cfg.write_text(TOOL_CONFIG.format(recipe=ROOT / doc["recipe"], root=root))
    ckpt = tmp_path / "paddleseg.pdparams"
    state = synthetic_state(doc)
    state = {k: (v * 0.05 if not k.endswith("_variance") else v) for k, v in state.items()}
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, str(ckpt))

    def tool(*args):
        proc = _run(*args)
        assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr

    log = tool("tools/val.py", "--config", str(cfg), "--model_path", str(ckpt),
               "--save_json", str(tmp_path / "m.json"))
    assert f"detected PaddleSeg 2.x {doc['model']} checkpoint" in log
    assert len(json.loads((tmp_path / "m.json").read_text())["class_IoU"]) == 19
    tool("tools/predict.py", "--config", str(cfg), "--model_path", str(ckpt),
         "--image_path", os.path.join(root, "val.txt"), "--save_dir", str(tmp_path / "pred"))
    assert os.listdir(tmp_path / "pred" / "pseudo_color_prediction")
    tool("tools/export.py", "--config", str(cfg), "--model_path", str(ckpt),
         "--save_dir", str(tmp_path / "exp"))
    log = tool("deploy/python/infer.py", "--config", str(tmp_path / "exp" / "deploy.yaml"),
               "--image_path", os.path.join(root, "val.txt"), "--save_dir", str(tmp_path / "dep"),
               "--cpu_threads", "1")
    assert os.listdir(tmp_path / "dep")
