"""The command-line tools on one of the authors' semseg checkpoints, with its recipe.

A semseg-layout ``train_epoch_50.pth`` (``{'epoch', 'state_dict', 'optimizer'}`` of a DDP
model: ``module.``-prefixed keys with the shapes of the committed key list, written by the
toolkit's own torch-free pickler as in ``test_semseg_adapter.py``) goes through what a user
runs with ``configs/psanet/semseg/voc2012_psanet50.yml``: ``tools/val.py``,
``tools/predict.py``, ``tools/export.py`` + ``deploy/python/infer.py`` and ``--format onnx`` +
``deploy/python/infer_onnx.py``. Every class map must
be the dygraph model's (the same state converted in memory) except at near-ties of its two
best logits (``test_mmseg_tools.TIE`` of the largest).

The recipe's test setting (long side to 512, 465x465 slide, flip) is turned off by ``--opts``
for a small, fast input whose class maps a single forward pass gives: the long side stays the
synthetic images' 75 pixels, one whole-image pass, no flip.
"""

import json
import sys
from pathlib import Path

import paddle
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.cvlibs import Config, SegBuilder
from synthetic import make_voc
from tiny_config import load_tool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import semseg_checkpoints as sc  # noqa: E402  (NumPy-only parts)
from test_mmseg_tools import (_assert_class_iou_is_the_references, _class_maps,  # noqa: E402
                             _export_agrees, _onnx_agrees, _predict_agrees, _vary_the_class_maps)
from test_deploy import needs_onnx  # noqa: E402
from test_torch_reader import _tensor, fake_torch, write_zip  # noqa: E402,F401

FAMILY = "voc2012_psanet50"
RECIPE = str(ROOT / sc.FAMILIES[FAMILY])
#: (width, height) of the synthetic VOC images: odd, not a multiple of 8.
SIZE = (75, 45)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("semseg_tools")
    data = make_voc(tmp / "VOCdevkit", n_train=1, n_val=3, size=SIZE, seed=5)
    keys = json.loads((sc.FIXTURES / f"{sc.fixture_name(FAMILY)}.json").read_text())["keys"]
    state = sc.random_state(keys, seed=21)
    pth = str(tmp / "train_epoch_50.pth")
    opts = [f"val_dataset.dataset_root={data}", f"train_dataset.dataset_root={data}",
            f"val_dataset.transforms.0.long_size={max(SIZE)}",
            "test_config.aug_eval=False", "test_config.is_slide=False"]
    builder = SegBuilder(Config(RECIPE, opts=opts))
    model, ds = builder.model, builder.val_dataset
    model.eval()
    _vary_the_class_maps(state, model, ds[0]["img"], classifier="module.cls.4")
    optimizer = {"state": {}, "param_groups": [{"lr": 0.0, "momentum": 0.9, "params": []}]}
    with pytest.MonkeyPatch.context() as mp:
        torch = fake_torch.__wrapped__(mp)
        write_zip(pth, {"epoch": 50, "optimizer": optimizer,
                        "state_dict": {k: _tensor(v, str(i)) for i, (k, v) in enumerate(state.items())}},
                  torch)
    native, conv = to_native(state, model, source=pth)
    assert conv.layout.startswith("semseg") and not conv.unplaced
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in native.items()})
    for i in range(len(ds)):  # the long_size opt keeps the images' size
        assert list(ds[i]["img"].shape[1:]) == [SIZE[1], SIZE[0]]
    ref = _class_maps(model, ds)
    listing = tmp / "val_images.txt"
    listing.write_text("".join(p + "\n" for p, _ in ds.file_list))
    return {"tmp": tmp, "pth": pth, "opts": opts, "ref": ref, "images": str(listing)}


def test_val_on_the_semseg_file_gives_the_dygraph_models_iou(case):
    metrics = load_tool("val").main(["--config", RECIPE, "--model_path", case["pth"], "--device", "cpu",
                                     "--opts", *case["opts"]])
    _assert_class_iou_is_the_references(case["ref"], metrics["class_IoU"], num_classes=21)

def test_predict_writes_the_dygraph_class_maps(case):
    _predict_agrees(RECIPE, case)


def test_export_and_paddle_inference(case):
    _export_agrees(RECIPE, case)


@needs_onnx
def test_onnx_export_and_onnxruntime(case):
    _onnx_agrees(RECIPE, case)
