"""mmsegmentation 1.2.2 checkpoints (PSPNet, DANet, PSANet, PointRend) converted exactly, guarded
without the peer.

The key/shape lists and golden logits in ``tests/fixtures/mmseg/`` were taken
from mmsegmentation's own models (``benchmarks/mmseg_checkpoints.py --fixtures``
in ``.venv-peers``); ``tests/test_peer_mmseg.py`` proves there that a file
saved by mmseg loads through ``--model_path`` with mmseg's logits. Here:

* a seeded state with the peer's keys and shapes converts with every tensor
  placed, every model key filled and the step counters reported;
* the same seeded state gives mmseg's committed logits (the golden cases);
* a real checkpoint of mmengine's Runner (``mmengine_tiny.pth``) loads its ``state_dict``
  with its ``message_hub`` log buffers set aside, and nothing else is admitted;
* a model of the wrong variant, class count or architecture gets one clear error.
"""

import json
import logging
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.checkpoints.adapters.mmseg_resnet import BACKBONE_SWITCHES
from paddleseg_ext.checkpoints.restricted_pickle import UnsafeWeightsError
from paddleseg_ext.checkpoints.torch_reader import SetAside, load_torch_checkpoint
from paddleseg_ext.checkpoints.weights import load_model_weights, read_model_weights
from paddleseg_ext.cvlibs import Config, SegBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mmseg_checkpoints as mc  # noqa: E402  (NumPy-only parts: random_state, FAMILIES)

from test_torch_reader import _tensor, fake_torch, write_zip  # noqa: E402,F401

FIXTURES = mc.FIXTURES


def fixture(family):
    return json.loads((FIXTURES / f"{mc.fixture_name(family)}.json").read_text())


def build(family, opts=()):
    model = SegBuilder(Config(str(ROOT / mc.FAMILIES[family]), opts=list(opts))).model
    model.eval()
    return model


def test_fixtures_cover_every_network_and_recipes_exist():
    """Every peer-proven network has its list, and every committed file is a network's or a
    recipe's list (benchmarks/mmseg_recipe_proofs.py) or the record of what was proven."""
    import mmseg_recipe_proofs as rp

    files = {p.name for p in FIXTURES.glob("*.json")}
    networks = {f"{mc.fixture_name(f)}.json" for f in mc.NETWORKS}
    assert networks <= files, sorted(networks - files)
    used = networks | {rp.fixture_for(name).name for name in rp.recipes()} | {rp.PROVEN.name}
    assert files <= used, f"fixtures no network or recipe uses: {sorted(files - used)}"
    for family, recipe in mc.FAMILIES.items():
        assert (ROOT / recipe).is_file() and Path(recipe).stem == family


@pytest.mark.parametrize("family", mc.NETWORKS)
def test_mmseg_layout_converts_whole(family, caplog):
    doc = fixture(family)
    assert doc["config"] == family
    model = build(family)
    state = mc.random_state(doc["keys"], seed=1)
    caplog.set_level(logging.INFO, logger="paddleseg_ext")
    native, conv = to_native(state, model, source=family)
    assert conv is not None and conv.layout == f"mmsegmentation {type(model).__name__}"
    own = model.state_dict()
    assert set(native) == set(own)
    assert all(list(native[k].shape) == list(own[k].shape) for k in own)
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert list(conv.not_loaded.values()) == [counters] and not conv.unplaced
    assert len(native) + len(counters) == len(state)
    assert [r.getMessage() for r in caplog.records] == [f"{family}: {conv.summary()}"]
    assert f"{len(counters)} BatchNorm step counters" in conv.summary()


def test_rules_place_the_right_values():
    family = "danet_r50-d8_4xb2-80k_cityscapes-512x1024"
    state = mc.random_state(fixture(family)["keys"], seed=2)
    native, _ = to_native(state, build(family))
    pairs = {
        "backbone.stem.3.weight": "backbone.conv1_2._conv.weight",
        "backbone.stem.7.running_var": "backbone.conv1_3._batch_norm._variance",
        "backbone.layer1.0.downsample.0.weight": "backbone.bb_0_0.short._conv.weight",
        "backbone.layer3.5.bn3.running_mean": "backbone.bb_2_5.conv2._batch_norm._mean",
        "backbone.layer4.0.conv2.weight": "backbone.bb_3_0.conv1._conv.weight",
        "decode_head.pam.query_project.weight": "head.pam.query_conv.weight",
        "decode_head.pam.value_project.bias": "head.pam.value_conv.bias",
        "decode_head.cam_out_conv.bn.bias": "head.cam_out._batch_norm.bias",
        "decode_head.pam_conv_seg.weight": "head.pam_cls.1.weight",
        "decode_head.conv_seg.bias": "head.fused_cls.1.bias",
        "auxiliary_head.convs.0.conv.weight": "aux_head.conv_bn_relu._conv.weight",
        "auxiliary_head.conv_seg.weight": "aux_head.conv.weight",
    }
    for peer, ours in pairs.items():
        np.testing.assert_array_equal(native[ours], state[peer], err_msg=peer)
    # mmcv's Scale holds a 0-d parameter; ours is [1].
    assert state["decode_head.pam.gamma.scale"].shape == ()
    np.testing.assert_array_equal(native["head.pam.gamma"], state["decode_head.pam.gamma.scale"].reshape(1))
    np.testing.assert_array_equal(native["head.cam.beta"], state["decode_head.cam.gamma.scale"].reshape(1))


@pytest.mark.parametrize("family,seed,size", mc.GOLDEN)
def test_seeded_state_gives_mmsegs_golden_logits(family, seed, size):
    want = np.load(FIXTURES / f"{mc.fixture_name(family)}_golden_seed{seed}.npy")
    model = build(family)
    native, _ = to_native(mc.random_state(fixture(family)["keys"], seed), model)
    model.set_state_dict(native)
    with paddle.no_grad():
        got = model(paddle.to_tensor(mc.random_input(size, seed)))[0].numpy()
    assert got.shape == want.shape == (1, model.num_classes, *size)
    scale = float(np.abs(want).max())
    assert scale > 0.1, f"golden logits too small to mean anything ({scale})"
    # Both sides run float32 convolutions (ours as conv2d or Winograd under the suite's
    # settings): the peer-environment proof measured ratios under 1e-6; 1e-5 of the largest
    # logit is the criterion.
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-5 * scale, f"{family}: max abs diff {diff} > 1e-5 x {scale}"


def test_mmengine_checkpoint_sets_its_message_hub_aside(caplog):
    path = str(FIXTURES / "mmengine_tiny.pth")
    raw = load_torch_checkpoint(path)
    assert sorted(raw) == ["message_hub", "meta", "optimizer", "param_schedulers", "state_dict"]
    buffers = raw["message_hub"]["log_scalars"]
    assert buffers and all(isinstance(b, SetAside) for b in buffers.values())
    assert "mmengine.logging.history_buffer.HistoryBuffer" in repr(next(iter(buffers.values())))
    caplog.set_level(logging.INFO, logger="paddleseg_ext")
    state = read_model_weights(path)
    assert sorted(state) == ["bn.bias", "bn.num_batches_tracked", "bn.running_mean",
                             "bn.running_var", "bn.weight", "conv.weight"]
    assert ("loading its 'state_dict', leaving out message_hub, meta, optimizer, "
            "param_schedulers") in caplog.text


class _Getattr:
    """Pickles as ``getattr(target, name)``, as a HistoryBuffer's methods are pickled."""

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return getattr, (self.target, self.name)


def test_getattr_is_admitted_only_on_a_set_aside_object(tmp_path, fake_torch):
    import collections

    path = str(tmp_path / "evil.pth")
    obj = {"state_dict": {"w": _tensor(np.ones(2, np.float32), "0")},
           "message_hub": {"x": _Getattr(collections.OrderedDict, "fromkeys")}}
    write_zip(path, obj, fake_torch)
    with pytest.raises(UnsafeWeightsError, match="getattr is admitted only on a set-aside"):
        load_torch_checkpoint(path)


def test_a_set_aside_object_inside_the_weights_is_refused(tmp_path):
    src = load_torch_checkpoint(str(FIXTURES / "mmengine_tiny.pth"))
    from paddleseg_ext.checkpoints.weights import unwrap_training_checkpoint

    state = dict(src["state_dict"])
    state["sneaky"] = next(iter(src["message_hub"]["log_scalars"].values()))
    with pytest.raises(ValueError, match="not tensors"):
        unwrap_training_checkpoint({"meta": {}, "state_dict": state}, "f.pth")


def test_default_backbone_refuses_an_mmseg_file_naming_the_switches():
    family = "pspnet_r18-d8_4xb2-80k_cityscapes-512x1024"
    state = mc.random_state(fixture(family)["keys"], seed=3)
    opts = [f"model.backbone.{k}={v}" for k, v in BACKBONE_SWITCHES.items() if k != "shortcut"]
    model = build(family, ["model.backbone.shortcut=avg_pool", *opts])
    with pytest.raises(ValueError) as e:
        to_native(state, model, source="psp.pth")
    msg = str(e.value)
    assert msg.count("\n") == 0 and "mmsegmentation PSPNet" in msg
    assert "shortcut='avg_pool' (mmseg: 'strided_conv')" in msg and "configs/pspnet/mmseg/" in msg


def test_wrong_num_classes_architecture_or_danet_variant_are_clear_errors():
    family = "pspnet_r18-d8_4xb2-80k_cityscapes-512x1024"
    state = mc.random_state(fixture(family)["keys"], seed=4)
    model = build(family, [f"{part}.num_classes=7" for part in
                           ("model", "train_dataset", "val_dataset")])
    with pytest.raises(ValueError) as e:
        to_native(state, model, source="psp.pth")
    assert "detected a mmsegmentation PSPNet checkpoint" in str(e.value)
    assert "cls.weight [19, 128, 1, 1] vs [7, 128, 1, 1]" in str(e.value)
    # A PSPNet file for a DANet: the other architecture, named.
    danet = build("danet_r50-d8_4xb2-80k_cityscapes-512x1024", ["model.backbone.type=ResNet18_vd"])
    with pytest.raises(ValueError, match="psp.pth: detected an mmsegmentation PSPNet checkpoint, "
                                         "but the model is a DANet. Build the PSPNet from"):
        to_native(state, danet, source="psp.pth")
    # A DANet built with PaddleSeg's logit resize is refused, naming the switch.
    keys = fixture("danet_r50-d8_4xb2-80k_cityscapes-512x1024")["keys"]
    danet = build("danet_r50-d8_4xb2-80k_cityscapes-512x1024", ["model.align_mode=1"])
    with pytest.raises(ValueError, match="align_mode=1"):
        to_native({k: np.zeros(v, np.float32) for k, v in keys.items()}, danet, source="da.pth")


def test_model_path_loads_an_mmseg_training_checkpoint(tmp_path, fake_torch):
    """``{'meta', 'state_dict'}`` as a .pth through load_model_weights (what --model_path uses)."""
    family = "pspnet_r18-d8_4xb2-80k_cityscapes-512x1024"
    state = mc.random_state(fixture(family)["keys"], seed=5)
    path = str(tmp_path / "psp.pth")
    obj = {"meta": {"mmseg_version": "1.2.2"},
           "state_dict": {k: _tensor(v, str(i)) for i, (k, v) in enumerate(state.items())}}
    write_zip(path, obj, fake_torch)
    model = build(family)
    load_model_weights(model, path)
    np.testing.assert_array_equal(model.state_dict()["cls.weight"].numpy(),
                                  state["decode_head.conv_seg.weight"])
    # The converter takes the same file, with or without a model to check it against.
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_weights", ROOT / "tools" / "convert_weights.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    native, conv = tool.convert(path)
    assert conv.layout == "mmsegmentation PSPNet" and set(native) == set(model.state_dict())
    assert len(conv.not_loaded["BatchNorm step counters (num_batches_tracked, unused in eval)"]) == 28


def test_model_pretrained_takes_an_mmseg_file_too(tmp_path, fake_torch):
    family = "pspnet_r18-d8_4xb2-80k_cityscapes-512x1024"
    state = mc.random_state(fixture(family)["keys"], seed=6)
    path = str(tmp_path / "psp.pth")
    write_zip(path, {"meta": {}, "state_dict": {k: _tensor(v, str(i))
                                                for i, (k, v) in enumerate(state.items())}},
              fake_torch)
    model = build(family, [f"model.pretrained={path}"])
    np.testing.assert_array_equal(model.state_dict()["backbone.conv1_1._conv.weight"].numpy(),
                                  state["backbone.stem.0.weight"])


def test_b_variant_places_the_7x7_stem():
    family = "pspnet_r18b-d8_4xb2-80k_cityscapes-512x1024"
    state = mc.random_state(fixture(family)["keys"], seed=14)
    assert not any(k.startswith("backbone.stem.") for k in state)
    native, _ = to_native(state, build(family))
    pairs = {"backbone.conv1.weight": "backbone.conv1._conv.weight",
             "backbone.bn1.weight": "backbone.conv1._batch_norm.weight",
             "backbone.bn1.running_mean": "backbone.conv1._batch_norm._mean",
             "backbone.layer1.0.conv2.weight": "backbone.bb_0_0.conv1._conv.weight"}
    for peer, ours in pairs.items():
        np.testing.assert_array_equal(native[ours], state[peer], err_msg=peer)


@pytest.mark.parametrize("file_v,model_v", [("", "b"), ("b", "")])
def test_a_file_of_the_other_stem_is_one_clear_error(file_v, model_v):
    """A ResNetV1c (deep stem) file for a "b" recipe, and a "b" (7x7 stem) file for a V1c one."""
    state = mc.random_state(fixture(f"pspnet_r18{file_v}-d8_4xb2-80k_cityscapes-512x1024")["keys"], 15)
    model = build(f"pspnet_r18{model_v}-d8_4xb2-80k_cityscapes-512x1024")
    with pytest.raises(ValueError) as e:
        to_native(state, model, source="psp.pth")
    msg = str(e.value)
    file_stem, model_stem = ("7x7" if file_v else "deep"), ("7x7" if model_v else "deep")
    assert msg.count("\n") == 0 and msg.startswith("psp.pth: detected an mmsegmentation PSPNet")
    assert f"built with stem={model_stem!r}" in msg and f"build it with stem: {file_stem}" in msg
    assert ("the 'b' configs, r<depth>b-d8" in msg) == bool(file_v)
