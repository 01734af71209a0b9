"""The authors' semseg PSPNet / PSANet checkpoints and torchvision ResNet files, guarded without the peers.

The key/shape lists and golden outputs in ``tests/fixtures/semseg/`` were taken
from semseg's own models (a checkout of hszhao/semseg) and torchvision's ResNet50
(``benchmarks/semseg_checkpoints.py --fixtures`` in ``.venv-peers``);
``tests/test_peer_semseg.py`` proves there that files saved by the peers load
through ``--model_path`` / ``pretrained:`` with the peers' outputs. Here:

* a seeded state with semseg's keys and shapes (``module.`` prefixed, as its DDP
  training saves) converts with every tensor placed, every model key filled and
  the step counters reported, for every recipe (50 and 101 layers);
* the same seeded state gives semseg's committed logits, and torchvision's
  seeded state gives its committed stage-4 features;
* ``{'epoch', 'state_dict', 'optimizer'}`` files load their ``state_dict`` and
  name what they leave out;
* a model of the wrong variant, class count or architecture gets one clear error.
"""

import functools
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.checkpoints.weights import read_model_weights
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.models.backbones.resnet_vd import ResNet50_vd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import semseg_checkpoints as sc  # noqa: E402  (NumPy-only parts: FAMILIES, random_state)

from test_torch_reader import _tensor, fake_torch, write_zip  # noqa: E402,F401

FIXTURES = sc.FIXTURES
SEMSEG_CONFIGS = [f"{ds}_{arch}{layers}" for ds in ("ade20k", "cityscapes", "voc2012")
                  for arch in ("psanet", "pspnet") for layers in (101, 50)]


def keys_of(family):
    """semseg's key/shape list for ``family``: the committed 50-layer list, with stage 3
    grown to 23 blocks for the 101-layer networks (semseg's ``resnet101``: 3, 4, 23, 3)."""
    arch = family.split("_")[1][:6]
    keys = json.loads((FIXTURES / f"{arch}50.json").read_text())["keys"]
    if family.endswith("101"):
        block = {k: v for k, v in keys.items() if k.startswith("module.layer3.5.")}
        for i in range(6, 23):
            keys.update({k.replace("layer3.5.", f"layer3.{i}."): v for k, v in block.items()})
    return keys


def build(family, opts=()):
    model = SegBuilder(Config(str(ROOT / sc.FAMILIES[family]), opts=list(opts))).model
    model.eval()
    return model


@functools.lru_cache(maxsize=4)
def built(family):
    """The recipe's model, shared by the tests that only convert into it (never loaded)."""
    return build(family)


def test_recipes_are_named_after_semsegs_config_files():
    assert sorted(sc.FAMILIES) == sorted(SEMSEG_CONFIGS)
    for family, recipe in sc.FAMILIES.items():
        assert (ROOT / recipe).is_file() and Path(recipe).stem == family
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(
        [f"{sc.fixture_name(f)}.json" for f in sc.NETWORKS] + ["torchvision_resnet50.json"])


@pytest.mark.parametrize("family", [f"voc2012_{a}{n}" for a in ("pspnet", "psanet")
                                    for n in (50, 101)])
def test_semseg_layout_converts_whole(family, caplog):
    model = built(family)
    keys = keys_of(family)
    state = sc.random_state(keys, seed=1)
    caplog.set_level(logging.INFO, logger="paddleseg_ext")
    native, conv = to_native(state, model, source=family)
    assert conv is not None and conv.layout == f"semseg {type(model).__name__}"
    own = model.state_dict()
    assert set(native) == set(own)
    assert all(list(native[k].shape) == list(own[k].shape) for k in own)
    counters = sorted(k[len("module."):] for k in state if k.endswith("num_batches_tracked"))
    assert [sorted(v) for v in conv.not_loaded.values()] == [counters] and not conv.unplaced
    assert len(native) + len(counters) == len(state)
    assert [r.getMessage() for r in caplog.records] == [f"{family}: {conv.summary()}"]


@pytest.mark.parametrize("family", ["ade20k_psanet50", "ade20k_pspnet101", "cityscapes_psanet101",
                                    "cityscapes_pspnet50"])
def test_recipes_take_their_semseg_file(family):
    """Class count, mask size and depth of the ADE20K / Cityscapes recipes fit semseg's
    network for that config (VOC above; every recipe against semseg's own key lists in
    tests/test_peer_semseg.py)."""
    keys = keys_of(family)
    classes = sc.params(family)["classes"]
    keys = {k: ([classes, *v[1:]] if re.match(r"module\.(cls|aux)\.4\.", k) else v)
            for k, v in keys.items()}
    if "psanet" in family:
        mask = sc.params(family)["mask_h"]
        keys = {k: ([mask * mask, *v[1:]] if re.match(r"module\.psa\.attention(_p)?\.3\.", k)
                    else v) for k, v in keys.items()}
    model = build(family)
    native, conv = to_native(sc.random_state(keys, 2), model, source=family)
    assert not conv.unplaced and set(native) == set(model.state_dict())


def test_rules_place_the_right_values():
    family = "voc2012_psanet50"
    state = sc.random_state(keys_of(family), seed=2)
    native, _ = to_native(state, built(family))
    pairs = {
        "module.layer0.0.weight": "backbone.conv1_1._conv.weight",
        "module.layer0.7.running_var": "backbone.conv1_3._batch_norm._variance",
        "module.layer1.0.downsample.0.weight": "backbone.bb_0_0.short._conv.weight",
        "module.layer3.5.bn3.running_mean": "backbone.bb_2_5.conv2._batch_norm._mean",
        "module.layer4.0.conv2.weight": "backbone.bb_3_0.conv1._conv.weight",
        "module.psa.reduce_p.1.weight": "psa.reduce_p._batch_norm.weight",
        "module.psa.attention.0.weight": "psa.attention.0._conv.weight",
        "module.psa.attention_p.3.weight": "psa.attention_p.1.weight",
        "module.psa.proj.1.bias": "psa.proj._batch_norm.bias",
        "module.cls.0.weight": "bottleneck._conv.weight",
        "module.cls.4.bias": "cls.bias",
        "module.aux.1.running_mean": "aux_head.conv_bn_relu._batch_norm._mean",
        "module.aux.4.weight": "aux_head.conv.weight",
    }
    for peer, ours in pairs.items():
        np.testing.assert_array_equal(native[ours], state[peer], err_msg=peer)
    psp = sc.random_state(keys_of("voc2012_pspnet50"), seed=3)
    native, _ = to_native(psp, built("voc2012_pspnet50"))
    np.testing.assert_array_equal(native["psp_module.stages.3.1._conv.weight"],
                                  psp["module.ppm.features.3.1.weight"])
    np.testing.assert_array_equal(native["psp_module.bottleneck._batch_norm._mean"],
                                  psp["module.cls.1.running_mean"])


def test_a_file_saved_without_ddp_loads_the_same():
    family = "voc2012_pspnet50"
    state = sc.random_state(keys_of(family), seed=4)
    plain = {k[len("module."):]: v for k, v in state.items()}
    a, _ = to_native(state, built(family))
    b, _ = to_native(plain, built(family))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family,seed,size", sc.GOLDEN)
def test_seeded_state_gives_semsegs_golden_logits(family, seed, size):
    want = np.load(FIXTURES / f"{sc.fixture_name(family)}_golden_seed{seed}.npy")
    model = build(family)
    native, _ = to_native(sc.random_state(keys_of(family), seed), model)
    model.set_state_dict(native)
    with paddle.no_grad():
        got = model(paddle.to_tensor(sc.random_input(size, seed)))[0].numpy()
    assert got.shape == want.shape == (1, 21, *size)
    scale = float(np.abs(want).max())
    assert scale > 0.1, f"golden logits too small to mean anything ({scale})"
    # Both sides run float32 convolutions (ours as conv2d or Winograd under the suite's
    # settings); the peer-environment proof measured ratios under 1e-6, and 1e-5 of the
    # largest logit is the criterion.
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-5 * scale, f"{family}: max abs diff {diff} > 1e-5 x {scale}"


def test_epoch_and_optimizer_are_left_out_by_name(tmp_path, fake_torch, caplog):
    """semseg's tool/train.py file: the state dict of a DDP model, the epoch and SGD's state."""
    path = str(tmp_path / "train_epoch_100.pth")
    weights = {"module.cls.4.weight": _tensor(np.ones((2, 3, 1, 1), np.float32), "0"),
               "module.cls.4.bias": _tensor(np.zeros(2, np.float32), "1")}
    optimizer = {"state": {0: {"momentum_buffer": _tensor(np.ones((2, 3, 1, 1), np.float32), "2")}},
                 "param_groups": [{"lr": 0.01, "momentum": 0.9, "dampening": 0,
                                   "weight_decay": 1e-4, "nesterov": False, "params": [0, 1]}]}
    write_zip(path, {"epoch": 100, "state_dict": weights, "optimizer": optimizer}, fake_torch)
    caplog.set_level(logging.INFO, logger="paddleseg_ext")
    state = read_model_weights(path)
    assert sorted(state) == ["module.cls.4.bias", "module.cls.4.weight"]
    assert "loading its 'state_dict', leaving out epoch, optimizer" in caplog.text


def test_a_resnet_vd_backbone_is_refused_naming_the_switches():
    family = "voc2012_pspnet50"
    state = sc.random_state(keys_of(family), seed=5)
    model = build(family, ["model.backbone.stem_channels=[32, 32, 64]",
                           "model.backbone.shortcut=avg_pool"])
    with pytest.raises(ValueError) as e:
        to_native(state, model, source="psp.pth")
    msg = str(e.value)
    assert msg.count("\n") == 0 and "psp.pth: detected a semseg PSPNet checkpoint" in msg
    assert "stem_channels=[32, 32, 64] (semseg: [64, 64, 128])" in msg
    assert "shortcut='avg_pool' (semseg: 'strided_conv')" in msg
    assert "configs/pspnet/semseg/" in msg


def test_functional_switches_that_shapes_cannot_tell_are_checked():
    family = "voc2012_psanet50"
    state = sc.random_state(keys_of(family), seed=6)
    for opt, named in (("model.align_corners=False", "align_corners=False (semseg: True)"),
                       ("model.psa_concat_order=distribute_first",
                        "psa_concat_order='distribute_first'"),
                       ("model.backbone.contract_dilation=True", "contract_dilation=True")):
        with pytest.raises(ValueError, match=re.escape(named)):
            to_native(state, build(family, [opt]), source="psa.pth")


def test_wrong_num_classes_or_architecture_are_clear_errors():
    family = "voc2012_pspnet50"
    state = sc.random_state(keys_of(family), seed=7)
    model = build(family, [f"{part}.num_classes=7" for part in
                           ("model", "train_dataset", "val_dataset")])
    with pytest.raises(ValueError) as e:
        to_native(state, model, source="psp.pth")
    assert "detected a semseg PSPNet checkpoint" in str(e.value)
    assert "cls.weight [21, 512, 1, 1] vs [7, 512, 1, 1]" in str(e.value)
    with pytest.raises(ValueError, match="psp.pth: detected a semseg PSPNet checkpoint, but the "
                                         "model is a PSANet. Build the PSPNet from"):
        to_native(state, built("voc2012_psanet50"), source="psp.pth")


# ------------------------------------------------------------------ torchvision
def torchvision_keys():
    return json.loads((FIXTURES / "torchvision_resnet50.json").read_text())["keys"]


def test_torchvision_file_initialises_the_7x7_stem_backbone(tmp_path, caplog):
    seed, size = sc.TORCHVISION_GOLDEN
    state = sc.random_state(torchvision_keys(), seed)
    path = tmp_path / "resnet50.pdparams"
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, str(path))
    caplog.set_level(logging.INFO, logger="paddleseg_ext")
    net = ResNet50_vd(output_stride=32, stem="7x7", shortcut="strided_conv", pretrained=str(path))
    net.eval()
    assert "2 ImageNet classifier tensors (fc, not part of the backbone) not loaded" in caplog.text
    assert "53 BatchNorm step counters" in caplog.text
    assert f"Loaded {len(net.state_dict())}/{len(net.state_dict())} tensors" in caplog.text
    with paddle.no_grad():
        got = net(paddle.to_tensor(sc.random_input(size, seed)))[3].numpy()
    want = np.load(FIXTURES / f"torchvision_resnet50_stage4_golden_seed{seed}.npy")
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    assert scale > 0.1 and float(np.abs(got - want).max()) <= 1e-5 * scale


@pytest.mark.parametrize("switches,named", [
    ({"stem": "deep"}, "stem='deep' (torchvision: '7x7')"),
    ({"stem": "7x7", "shortcut": "avg_pool"}, "shortcut='avg_pool' (torchvision: 'strided_conv')"),
])
def test_torchvision_file_refuses_another_backbone_function(switches, named):
    state = sc.random_state(torchvision_keys(), 0)
    net = ResNet50_vd(output_stride=32, **switches)
    with pytest.raises(ValueError, match=re.escape(named)):
        to_native(state, net, source="resnet50.pth")


def test_converter_detects_semseg_files_without_a_model():
    """tools/convert_weights.py without --config converts on the keys alone."""
    from paddleseg_ext.checkpoints.adapters import as_numpy, detect_adapter

    for family, name in (("voc2012_pspnet50", "semseg.pspnet"), ("voc2012_psanet50", "semseg.psanet")):
        state = {k: np.zeros(v, np.float32) for k, v in keys_of(family).items()}
        adapter = detect_adapter(list(state), None, family)
        assert adapter is not None and adapter.name == name
        conv = adapter.convert(as_numpy(state), None)
        assert not conv.unplaced and len(conv.state) + len(conv.not_loaded[next(iter(
            conv.not_loaded))]) == len(state)


def test_a_backbone_with_other_dilations_is_refused():
    """semseg dilates stages 3 / 4 by 2 / 4 at output stride 8; other dilations keep the tensors."""
    family = "voc2012_pspnet50"
    model = build(family, ["model.backbone.dilations=[1, 1, 1, 2]"])
    state = sc.random_state(keys_of(family), seed=3)
    with pytest.raises(ValueError, match=r"dilations=\[1, 1, 1, 2\] \(semseg: \[1, 1, 2, 4\]\)"):
        to_native(state, model, source="s.pth")
