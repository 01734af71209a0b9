"""mmcls / mmpretrain ImageNet ResNet files initialise the 7x7-stem ResNet_vd (guarded without the peer).

The key/shape list in ``tests/fixtures/mmcls/resnet50_in1k.json`` is an mmcls ``ImageClassifier``'s
(ResNet50 under ``backbone.``, ``LinearClsHead``'s ``fc`` under ``head.fc``), taken in
``.venv-peers`` from mmseg's ``ResNet``, which mmcls' mirrors (mmpretrain's
``models/backbones/resnet.py``: same layers and names); ``tests/test_peer_mmseg.py`` checks there
that such a file gives the peer ResNet's features. Here: a seeded file in that layout, saved as
mmcls saves (``{'meta', 'state_dict'}``), loads through ``pretrained:`` with every tensor placed and
the classifier reported; a backbone it does not fit gets one clear error.
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from paddleseg_ext.models.backbones import ResNet18_vd, ResNet50_vd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402  (NumPy-only parts)

from test_torch_reader import _tensor, fake_torch, write_zip  # noqa: E402,F401

KEYS = json.loads(mc.MMCLS_FIXTURE.read_text())["keys"]


@pytest.fixture
def mmcls_file(tmp_path, fake_torch):
    state = mc.random_state(KEYS, seed=21)
    path = str(tmp_path / "resnet50_8xb256-rsb-a1-600e_in1k.pth")
    write_zip(path, {"meta": {"mmcls_version": "0.19.0"},
                     "state_dict": {k: _tensor(v, str(i)) for i, (k, v) in enumerate(state.items())}},
              fake_torch)
    return path, state


def test_layout_is_an_image_classifiers():
    assert {k for k in KEYS if not k.startswith("backbone.")} == {"head.fc.weight", "head.fc.bias"}
    assert KEYS["head.fc.weight"] == [1000, 2048] and KEYS["backbone.conv1.weight"] == [64, 3, 7, 7]
    assert "backbone.layer4.0.downsample.0.weight" in KEYS and "backbone.stem.0.weight" not in KEYS


def test_pretrained_places_every_tensor(mmcls_file, caplog):
    path, state = mmcls_file
    caplog.set_level(logging.INFO, logger="paddleseg_ext")
    net = ResNet50_vd(stem="7x7", shortcut="strided_conv", pretrained=path)
    own = net.state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(own) + len(counters) + 2 == len(state)
    pairs = {"backbone.conv1.weight": "conv1._conv.weight",
             "backbone.bn1.running_var": "conv1._batch_norm._variance",
             "backbone.layer1.0.downsample.0.weight": "bb_0_0.short._conv.weight",
             "backbone.layer3.5.bn3.running_mean": "bb_2_5.conv2._batch_norm._mean",
             "backbone.layer4.2.conv2.weight": "bb_3_2.conv1._conv.weight"}
    for peer, ours in pairs.items():
        np.testing.assert_array_equal(own[ours].numpy(), state[peer], err_msg=peer)
    text = caplog.text
    assert "detected mmcls / mmpretrain ImageNet ResNet checkpoint: 265 tensors" in text
    assert f"{len(counters)} BatchNorm step counters" in text
    assert "2 ImageNet classifier tensors (head.fc, not part of the backbone) not loaded" in text
    assert f"Loaded {len(own)}/{len(own)} tensors" in text


def test_the_rsb_recipe_takes_it(mmcls_file):
    from paddleseg_ext.cvlibs import Config, SegBuilder

    path, state = mmcls_file
    recipe = ROOT / "configs/pspnet/mmseg/pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024.yml"
    model = SegBuilder(Config(str(recipe), opts=[f"model.backbone.pretrained={path}"])).model
    np.testing.assert_array_equal(model.backbone.state_dict()["bb_3_0.short._conv.weight"].numpy(),
                                  state["backbone.layer4.0.downsample.0.weight"])


@pytest.mark.parametrize("kwargs,named", [
    (dict(stem="deep", shortcut="strided_conv"), "stem='deep' (mmcls: '7x7')"),
    (dict(stem="7x7", shortcut="avg_pool"), "shortcut='avg_pool' (mmcls: 'strided_conv')"),
])
def test_a_backbone_of_another_function_is_refused(mmcls_file, kwargs, named):
    path, _ = mmcls_file
    with pytest.raises(ValueError) as e:
        ResNet50_vd(pretrained=path, **kwargs)
    msg = str(e.value)
    assert msg.count("\n") == 0 and "detected a mmcls / mmpretrain ImageNet ResNet file" in msg
    assert named in msg and "pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024.yml" in msg


def test_a_resnet50_file_for_a_resnet18_is_refused(mmcls_file):
    path, _ = mmcls_file
    with pytest.raises(ValueError, match=r"does not fit this ResNet_vd: .*shape mismatches"):
        ResNet18_vd(stem="7x7", shortcut="strided_conv", identity_shortcut=True, pretrained=path)
