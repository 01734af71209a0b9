"""What an mmsegmentation checkpoint records about itself (its config text in ``meta``) is read
without running anything, and a model whose function differs from it is refused.

A d32 PSPNet file has a d8 file's keys and shapes, and a 769x769 file a 512x1024 one's: only the
recorded config tells them apart. ``tests/test_peer_mmseg.py`` checks the reader on mmseg's own
config texts of every recipe (in ``.venv-peers``).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.checkpoints.recorded_config import UNKNOWN, recorded_model_config, setting
from paddleseg_ext.checkpoints.weights import load_model_weights
from paddleseg_ext.cvlibs import Config, SegBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402  (NumPy-only parts)
from test_torch_reader import _tensor, fake_torch, write_zip  # noqa: E402,F401

D8 = "pspnet_r50-d8_4xb2-80k_cityscapes-512x1024"
D32 = "pspnet_r50-d32_4xb2-80k_cityscapes-512x1024"


def _text(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), align_corners=False):
    """A config text as mmengine's ``pretty_text`` writes it (variables, then the model dict)."""
    return (f"norm_cfg = dict(type='SyncBN', requires_grad=True)\ncrop_size = (512, 1024)\n"
            f"model = dict(\n    type='EncoderDecoder',\n    pretrained='open-mmlab://resnet50_v1c',\n"
            f"    backbone=dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),\n"
            f"        dilations={tuple(dilations)}, strides={tuple(strides)}, norm_cfg=norm_cfg,\n"
            f"        norm_eval=False, style='pytorch', contract_dilation=True),\n"
            f"    decode_head=dict(type='PSPHead', in_channels=2048, pool_scales=(1, 2, 3, 6),\n"
            f"        num_classes=19, align_corners={align_corners}, dropout_ratio=0.1,\n"
            f"        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),\n"
            f"    test_cfg=dict(mode='whole'))\n")


def test_the_model_settings_are_read_as_literals():
    cfg = recorded_model_config({"config": _text(strides=(1, 2, 2, 2))})
    assert setting(cfg, "backbone", "strides") == [1, 2, 2, 2]
    assert setting(cfg, "backbone", "dilations") == [1, 1, 2, 4]
    assert setting(cfg, "decode_head", "align_corners") is False
    assert setting(cfg, "backbone", "norm_cfg") is UNKNOWN  # a variable, not a literal
    assert setting(cfg, "auxiliary_head", "num_classes") is UNKNOWN  # not recorded
    # mmengine's Runner names it 'cfg'; the last assignment wins, as when the text runs
    again = recorded_model_config({"cfg": _text() + "model = dict(backbone=dict(strides=(1, 2, 2, 1)))\n"})
    assert setting(again, "backbone", "strides") == [1, 2, 2, 1]


@pytest.mark.parametrize("meta", [None, {}, {"mmseg_version": "1.2.2"}, {"config": "..."},
                                  {"config": "model = dict(("}, {"config": "model = 3"}, "text",
                                  {"config": b"model = dict()"}])
def test_a_file_that_records_no_model_config_gives_none(meta):
    assert recorded_model_config(meta) is None


def test_nothing_in_the_recorded_text_runs(tmp_path):
    marker = tmp_path / "ran"
    text = (f"import os\nos.system('touch {marker}')\nmodel = __import__('os').system('touch {marker}')\n"
            f"model = dict(backbone=open('{marker}', 'w'), decode_head=dict(align_corners=True))\n")
    cfg = recorded_model_config({"config": text})
    assert not marker.exists()
    assert setting(cfg, "backbone") is UNKNOWN and setting(cfg, "decode_head", "align_corners") is True


@pytest.fixture(scope="module")
def models():
    def build(name):
        return SegBuilder(Config(str(ROOT / "configs/pspnet/mmseg" / f"{name}.yml"))).model

    return {D8: build(D8), D32: build(D32)}


def _state():
    keys = json.loads((mc.FIXTURES / "pspnet_r50-d8.json").read_text())["keys"]
    return mc.random_state(keys, seed=3)


@pytest.mark.parametrize("recipe,text,says", [
    (D8, _text(strides=(1, 2, 2, 2)), "backbone strides=(1, 2, 2, 2) (this model's: (1, 2, 1, 1))"),
    (D32, _text(), "backbone strides=(1, 2, 1, 1) (this model's: (1, 2, 2, 2))"),
    (D8, _text(align_corners=True), "decode_head align_corners=True (this model's: False)"),
    (D8, _text(dilations=(1, 1, 1, 1)), "backbone dilations=(1, 1, 1, 1) (this model's: (1, 1, 2, 4))"),
])
def test_a_recipe_of_another_function_than_the_recorded_config_is_refused(models, recipe, text, says):
    with pytest.raises(ValueError) as e:
        to_native(_state(), models[recipe], source="f.pth", meta={"config": text})
    message = str(e.value)
    assert message.startswith("f.pth: the config this mmsegmentation checkpoint records builds ")
    assert says in message and "configs/pspnet/mmseg/<config>.yml" in message


@pytest.mark.parametrize("recipe,meta", [
    (D8, {"config": _text()}), (D32, {"cfg": _text(strides=(1, 2, 2, 2))}),
    (D8, {"config": "..."}), (D32, None),  # nothing recorded: the recipe decides, as before
])
def test_the_recipe_of_the_recorded_config_loads(models, recipe, meta):
    native, conv = to_native(_state(), models[recipe], source="f.pth", meta=meta)
    assert conv is not None and not conv.unplaced


def test_model_path_reads_the_files_meta(models, fake_torch, tmp_path):
    """Through load_model_weights (what --model_path uses): the meta travels with the file."""
    state = {k: _tensor(v, str(i)) for i, (k, v) in enumerate(_state().items())}
    path = tmp_path / "d32.pth"
    write_zip(str(path), {"meta": {"mmseg_version": "0.30.0", "config": _text(strides=(1, 2, 2, 2))},
                          "state_dict": state}, fake_torch)
    with pytest.raises(ValueError, match=r"d32.pth: the config this mmsegmentation checkpoint "
                                         r"records builds backbone strides=\(1, 2, 2, 2\)"):
        load_model_weights(models[D8], str(path))
    load_model_weights(models[D32], str(path))
    want = np.asarray(_state()["decode_head.conv_seg.weight"])
    assert np.array_equal(models[D32].state_dict()["cls.weight"].numpy(), want)
