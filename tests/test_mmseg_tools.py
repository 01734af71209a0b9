"""The command-line tools on an mmsegmentation checkpoint, with the recipe of the same name.

An mmseg-layout ``.pth`` (``{'meta', 'state_dict'}`` with mmseg's keys and shapes, from the
committed key list, written by the toolkit's own torch-free pickler as in
``test_mmseg_adapter.py``) goes through what a user runs: ``tools/val.py``,
``tools/predict.py``, ``tools/export.py`` + ``deploy/python/infer.py``, ``--format onnx`` +
``deploy/python/infer_onnx.py`` and ``tools/convert_weights.py``. Every class map must be the
dygraph model's (the same state converted in memory) except where that model's two best logits
are closer than the float32 noise between the runtimes can reach.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.cvlibs import Config, SegBuilder
from synthetic import make_cityscapes
from tiny_config import load_tool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "deploy" / "python"))
import mmseg_checkpoints as mc  # noqa: E402  (NumPy-only parts)
import infer  # noqa: E402
import infer_onnx  # noqa: E402
from test_deploy import HAS_ONNX, needs_onnx  # noqa: E402
from test_torch_reader import _Exploit, _tensor, fake_torch, write_zip  # noqa: E402

FAMILY = "pspnet_r18-d8_4xb2-80k_cityscapes-512x1024"
RECIPE = str(ROOT / mc.FAMILIES[FAMILY])
#: (width, height) of the synthetic Cityscapes images: odd, not a multiple of 8.
SIZE = (75, 45)
#: Runtimes (dygraph, BN folded, Paddle Inference, onnxruntime) sum float32 products in
#: different orders: through 18 layers of logits of about 1 unit their differences stay
#: near 1e-6 of the largest logit (the peer comparison measured under 1e-6). A pixel whose two
#: best logits are closer than 1e-4 of the largest may take either class; every other pixel
#: must agree exactly.
TIE = 1e-4


def _vary_the_class_maps(state, model, img, classifier="decode_head.conv_seg"):
    """Centre the classifier on the features of ``img`` (its bias, ``classifier + ".bias"`` in
    ``state``).

    With random weights the features entering the classifier are nearly constant over the
    image, so every pixel takes the same class and a class-map comparison would prove
    little; subtracting their mean over ``img`` makes the maps vary from pixel to pixel.
    """
    feats = []
    hook = model.cls.register_forward_pre_hook(lambda _layer, inputs: feats.append(inputs[0].numpy()))
    native, _ = to_native(state, model)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in native.items()})
    with paddle.no_grad():
        model(paddle.to_tensor(img[None]))
    hook.remove()
    mean = feats[0][0].reshape(feats[0].shape[1], -1).mean(1)
    weight = state[f"{classifier}.weight"][:, :, 0, 0]
    state[f"{classifier}.bias"] = (-(weight @ mean)).astype(np.float32)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mmseg_tools")
    data = make_cityscapes(tmp / "cityscapes", n_train=1, n_val=3, size=SIZE, seed=3)
    keys = json.loads((mc.FIXTURES / f"{mc.fixture_name(FAMILY)}.json").read_text())["keys"]
    state = mc.random_state(keys, seed=11)
    pth = str(tmp / f"{FAMILY}.pth")
    opts = [f"val_dataset.dataset_root={data}", f"train_dataset.dataset_root={data}"]
    builder = SegBuilder(Config(RECIPE, opts=opts))
    model, ds = builder.model, builder.val_dataset
    model.eval()
    _vary_the_class_maps(state, model, ds[0]["img"])
    with pytest.MonkeyPatch.context() as mp:
        torch = fake_torch.__wrapped__(mp)
        write_zip(pth, {"meta": {"mmseg_version": "1.2.2", "CLASSES": None},
                        "state_dict": {k: _tensor(v, str(i)) for i, (k, v) in enumerate(state.items())}},
                  torch)
    native, conv = to_native(state, model, source=pth)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in native.items()})
    ref = _class_maps(model, ds)
    listing = tmp / "val_images.txt"
    listing.write_text("".join(p + "\n" for p, _ in ds.file_list))
    return {"tmp": tmp, "pth": pth, "opts": opts, "ref": ref, "images": str(listing),
            "layout": conv.layout}


def _class_maps(model, ds):
    """The dygraph ``model``'s class map of each image of ``ds``, its labels and its near-ties.

    The comparisons with the tools mean something only on varied, mostly clear maps: each must
    take at least 5 classes and have under 1% near-tie pixels.
    """
    ref = []
    with paddle.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            logits = model(paddle.to_tensor(item["img"][None]))[0].numpy()[0]
            top2 = np.sort(logits, axis=0)[-2:]
            ref.append({"name": Path(ds.file_list[i][0]).name, "label": item["label"].squeeze(),
                        "pred": logits.argmax(0), "tie": (top2[1] - top2[0]) <= TIE * np.abs(logits).max()})
    for r in ref:
        assert np.unique(r["pred"]).size >= 5 and r["tie"].mean() < 0.01, (r["name"], r["tie"].mean())
    return ref


def _assert_class_iou_is_the_references(ref, class_iou, num_classes=19):
    """``class_iou`` (a tool's) against the IoU of the dygraph class maps ``ref``: a near-tie pixel
    may flip, moving a class's intersection and union by at most 1 each."""
    inter, union = _miou(ref, num_classes)
    n_tie = int(sum(r["tie"][r["label"] != 255].sum() for r in ref))
    present = union > 0
    want = inter[present] / union[present]
    got = np.asarray(class_iou)[present]
    bound = 2 * n_tie / np.maximum(union[present] - n_tie, 1)
    assert np.all(np.abs(got - want) <= bound + 1e-12), (got, want, n_tie)


def _agree(ref, pred, what):
    assert pred.shape == ref["pred"].shape, f"{what}: {pred.shape} vs {ref['pred'].shape}"
    differ = pred != ref["pred"]
    assert not (differ & ~ref["tie"]).any(), (
        f"{what} {ref['name']}: {int((differ & ~ref['tie']).sum())} pixels differ from the dygraph "
        f"model where its two best logits are more than {TIE} x the largest apart")


def _miou(ref, num_classes=19):
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for r in ref:
        valid = r["label"] != 255
        p, t = r["pred"][valid], r["label"][valid].astype(np.int64)
        inter += np.bincount(t[p == t], minlength=num_classes)
        union += np.bincount(p, minlength=num_classes) + np.bincount(t, minlength=num_classes)
    union -= inter
    return inter, union


def test_val_on_the_mmseg_file_and_on_its_conversion(case):
    tmp = case["tmp"]
    converted = str(tmp / "native.pdparams")
    load_tool("convert_weights").main([case["pth"], converted, "--config", RECIPE, "--opts", *case["opts"]])
    val = load_tool("val")
    m_pth = val.main(["--config", RECIPE, "--model_path", case["pth"], "--device", "cpu", "--opts", *case["opts"]])
    m_native = val.main(["--config", RECIPE, "--model_path", converted, "--device", "cpu",
                         "--opts", *case["opts"]])
    assert m_pth["mIoU"] == m_native["mIoU"]
    np.testing.assert_array_equal(m_pth["class_IoU"], m_native["class_IoU"])
    _assert_class_iou_is_the_references(case["ref"], m_pth["class_IoU"])


def test_convert_weights_reports_the_layout(case, capsys):
    out = str(case["tmp"] / "cli_native.pdparams")
    load_tool("convert_weights").main([case["pth"], out])
    text = capsys.readouterr().out
    assert "layout: mmsegmentation PSPNet" in text and case["layout"] == "mmsegmentation PSPNet"
    assert "not loaded: 28 BatchNorm step counters" in text
    assert "checked against: no model" in text and os.path.isfile(out)


def test_predict_writes_the_dygraph_class_maps(case):
    _predict_agrees(RECIPE, case)


def _predict_agrees(recipe, case):
    """tools/predict.py with ``recipe`` on ``case``'s file writes the dygraph class maps."""
    save = case["tmp"] / "pred"
    load_tool("predict").main(["--config", recipe, "--model_path", case["pth"], "--image_path", case["images"],
                               "--save_dir", str(save), "--device", "cpu", "--opts", *case["opts"]])
    for ref in case["ref"]:
        stem = ref["name"].rsplit(".", 1)[0]
        hits = list((save / "pseudo_color_prediction").rglob(stem + ".png"))
        assert len(hits) == 1, f"no single prediction for {stem}: {hits}"
        _agree(ref, np.asarray(Image.open(hits[0])), "tools/predict.py")


def _by_name(preds):
    return {Path(p).name: m for p, m in preds}


def test_export_and_paddle_inference(case):
    _export_agrees(RECIPE, case)


def _export_agrees(recipe, case):
    """tools/export.py with ``recipe`` on ``case``'s file, run by deploy/python/infer.py, gives
    the dygraph class maps."""
    exp = case["tmp"] / "export"
    load_tool("export").main(["--config", recipe, "--model_path", case["pth"], "--save_dir", str(exp),
                              "--opts", *case["opts"]])
    preds = _by_name(infer.main(["--config", str(exp / "deploy.yaml"), "--image_path", case["images"],
                                 "--save_dir", str(case["tmp"] / "deploy"), "--cpu_threads", "1"]))
    assert sorted(preds) == sorted(r["name"] for r in case["ref"])
    for ref in case["ref"]:
        _agree(ref, np.asarray(preds[ref["name"]]).squeeze(), "deploy/python/infer.py")


@needs_onnx
def test_onnx_export_and_onnxruntime(case):
    _onnx_agrees(RECIPE, case)


def _onnx_agrees(recipe, case):
    """tools/export.py --format onnx with ``recipe`` on ``case``'s file, run by
    deploy/python/infer_onnx.py, gives the dygraph class maps."""
    assert HAS_ONNX
    exp = case["tmp"] / "onnx"
    load_tool("export").main(["--config", recipe, "--model_path", case["pth"], "--save_dir", str(exp),
                              "--format", "onnx", "--opts", *case["opts"]])
    preds = _by_name(infer_onnx.main(["--config", str(exp / "deploy.yaml"), "--image_path", case["images"],
                                      "--save_dir", str(case["tmp"] / "onnx_out"), "--cpu_threads", "1"]))
    assert sorted(preds) == sorted(r["name"] for r in case["ref"])
    for ref in case["ref"]:
        _agree(ref, np.asarray(preds[ref["name"]]).squeeze(), "deploy/python/infer_onnx.py")


def _write_mmseg_file(path, state, torch, meta=None):
    write_zip(str(path), {"meta": meta if meta is not None else {"mmseg_version": "1.2.2"},
                          "state_dict": {k: _tensor(v, str(i)) for i, (k, v) in enumerate(state.items())}},
              torch)
    return str(path)


P18, P50, D50 = (f"{m}-d8_4xb2-80k_cityscapes-512x1024" for m in ("pspnet_r18", "pspnet_r50", "danet_r50"))
NUM7 = [f"{part}.num_classes=7" for part in ("model", "train_dataset", "val_dataset")]


@pytest.mark.parametrize("family,recipe,opts,says", [
    # wrong architecture, both ways
    (D50, P50, [], ["detected an mmsegmentation DANet checkpoint, but the model is a PSPNet",
                    "configs/danet/mmseg/"]),
    (P18, D50, ["model.backbone.type=ResNet18_vd"],
     ["detected an mmsegmentation PSPNet checkpoint, but the model is a DANet", "configs/pspnet/mmseg/"]),
    # wrong variant: depth, head width, backbone switch, DANet's auxiliary head
    (P50, P18, [], ["mmsegmentation PSPNet checkpoint, but it does not fit this PSPNet",
                    "backbone.bb_0_0.conv0._conv.weight [64, 64, 1, 1] vs [64, 64, 3, 3]", "same depth"]),
    (P18, P18, ["model.pp_out_channels=256"], ["psp_module.bottleneck._conv.weight [128, 1024, 3, 3] vs "
                                               "[256, 1024, 3, 3]"]),
    (P18, P18, ["model.backbone.contract_dilation=False"], ["contract_dilation=False (mmseg: True)"]),
    (D50, D50, ["model.aux_head=linear"], ["mmsegmentation DANet checkpoint, but this DANet is built with "
                                           "aux_head='linear'"]),
    # wrong num_classes
    (D50, D50, NUM7, ["mmsegmentation DANet checkpoint, but it does not fit this DANet",
                      "head.fused_cls.1.weight [19, 512, 1, 1] vs [7, 512, 1, 1]"]),
])
def test_a_file_that_does_not_fit_gets_one_clear_error_from_the_tools(tmp_path, fake_torch, capsys,
                                                                         family, recipe, opts, says):
    from paddleseg_ext.utils.cli import run_cli

    keys = json.loads((mc.FIXTURES / f"{mc.fixture_name(family)}.json").read_text())["keys"]
    path = _write_mmseg_file(tmp_path / "peer.pth", mc.random_state(keys, seed=12), fake_torch)
    cfg = str(ROOT / mc.FAMILIES[recipe])
    argv = [path, str(tmp_path / "out.pdparams"), "--config", cfg] + (["--opts", *opts] if opts else [])
    status = run_cli(load_tool("convert_weights").main, argv)
    lines = capsys.readouterr().err.strip().splitlines()
    # One paragraph, then the tool's hint about tracebacks.
    assert status == 2 and len(lines) == 2 and "PADDLESEG_EXT_DEBUG=1" in lines[1], lines
    err = lines[0]
    assert err.startswith("error: ") and path in err, err
    for fragment in says:
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert not (tmp_path / "out.pdparams").exists()


def test_a_crafted_pickle_in_an_mmseg_file_runs_nothing(case, fake_torch, tmp_path, capsys):
    """The exploit sits where mmseg files keep free-form objects (``meta``), through tools/val.py."""
    from paddleseg_ext.utils.cli import run_cli

    keys = json.loads((mc.FIXTURES / f"{mc.fixture_name(FAMILY)}.json").read_text())["keys"]
    marker = tmp_path / "PWNED"
    path = _write_mmseg_file(tmp_path / "evil.pth", mc.random_state(keys, seed=13), fake_torch,
                             meta={"mmseg_version": "1.2.2", "hook": _Exploit(marker)})
    status = run_cli(load_tool("val").main, ["--config", RECIPE, "--model_path", path, "--device", "cpu",
                                             "--opts", *case["opts"]])
    err = capsys.readouterr().err
    assert status == 2 and "system" in err and path in err, err
    assert not marker.exists()
