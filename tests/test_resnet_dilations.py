"""ResNet_vd's ``dilations`` switch: stage dilations independent of the strides.

The default (None) must be today's rule for each output stride (same function);
mmsegmentation's d32 configs (strides 1, 2, 2, 2 with dilations 1, 1, 2, 4 and
``contract_dilation=True``, its ``models/utils/res_layer.py``) must put each stride
and dilation where mmseg's ``ResLayer`` puts them; a list of the wrong length is one
clear error, and the mmseg adapters refuse a dilation form mmseg never builds.
"""

from pathlib import Path

import numpy as np
import paddle
import pytest

from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.cvlibs.errors import ConfigError
from paddleseg_ext.models.backbones.resnet_vd import ResNet18_vd, ResNet50_vd

ROOT = Path(__file__).resolve().parents[1]
#: mmseg's V1c switches (configs/_base_/mmseg/resnetv1c-d8.yml)
V1C = dict(shortcut="strided_conv", identity_shortcut=True, contract_dilation=True,
           dilate_basic_second_conv=False)


def _x(h, w, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).normal(size=(1, 3, h, w)).astype("float32"))


@pytest.mark.parametrize("os_,rule", [(8, [1, 1, 2, 4]), (16, [1, 1, 1, 2]), (32, [1, 1, 1, 1])])
def test_default_is_the_output_strides_own_rule(os_, rule):
    paddle.seed(0)
    a = ResNet18_vd(output_stride=os_)
    paddle.seed(0)
    b = ResNet18_vd(output_stride=os_, dilations=rule)
    assert a.dilations == b.dilations == rule and a.feat_strides == b.feat_strides
    a.eval()
    b.eval()
    with paddle.no_grad():
        for fa, fb in zip(a(_x(37, 45)), b(_x(37, 45))):
            np.testing.assert_array_equal(fa.numpy(), fb.numpy())


def _conv3x3(block):
    """(stride, dilation) of a bottleneck's 3x3 conv (mmseg's conv2, our conv1)."""
    conv = block.conv1._conv
    assert conv._padding == conv._dilation[0]  # 'same' padding for the dilation
    return conv._stride[0], conv._dilation[0]


def test_d32_places_strides_and_dilations_as_mmsegs_reslayer():
    net = ResNet50_vd(output_stride=32, dilations=[1, 1, 2, 4], **V1C)
    assert net.feat_strides == [4, 8, 16, 32]
    got = {name: _conv3x3(net._sub_layers[name]) for name in ("bb_1_0", "bb_2_0", "bb_2_1", "bb_2_5",
                                                                "bb_3_0", "bb_3_1", "bb_3_2")}
    # contract_dilation: a dilated stage's first block takes half its dilation, with the stride
    assert got == {"bb_1_0": (2, 1), "bb_2_0": (2, 1), "bb_2_1": (1, 2), "bb_2_5": (1, 2),
                   "bb_3_0": (2, 2), "bb_3_1": (1, 4), "bb_3_2": (1, 4)}
    # the strided shortcut: a strided 1x1 conv, no pooling
    assert net._sub_layers["bb_3_0"].short._conv._stride == [2, 2]
    net.eval()
    with paddle.no_grad():
        feats = net(_x(67, 93))
    assert [list(f.shape[2:]) for f in feats] == [[17, 24], [9, 12], [5, 6], [3, 3]]


def test_d32_has_d8s_tensors_and_another_function():
    paddle.seed(1)
    d8 = ResNet50_vd(output_stride=8, **V1C)
    d32 = ResNet50_vd(output_stride=32, dilations=[1, 1, 2, 4], **V1C)
    shapes = [{k: v.shape for k, v in net.state_dict().items()} for net in (d8, d32)]
    assert shapes[0] == shapes[1]
    d32.set_state_dict(d8.state_dict())
    d8.eval()
    d32.eval()
    with paddle.no_grad():
        a, b = d8(_x(64, 64))[3], d32(_x(64, 64))[3]
    assert list(a.shape[2:]) == [8, 8] and list(b.shape[2:]) == [2, 2]


@pytest.mark.parametrize("value", [[1, 1, 2], [1, 1, 2, 4, 4]])
def test_wrong_length_is_one_clear_error(value):
    with pytest.raises(ValueError, match=r"ResNet18_vd: dilations=\[.*\] needs 4 entries, one per stage"):
        ResNet18_vd(dilations=value)


@pytest.mark.parametrize("value", [[1, 0, 2, 4], "1,1,2,4", [1, 1, 2.0, 4]])
def test_bad_values_are_refused_by_the_builder(value):
    cfg = Config(str(ROOT / "configs/pspnet/mmseg/pspnet_r50-d32_4xb2-80k_cityscapes-512x1024.yml"),
                 opts=[f"model.backbone.dilations={value!r}"])
    with pytest.raises(ConfigError, match=r"model.backbone.dilations.*dilations must be a non-empty list of "
                                          r"positive ints or None, got"):
        SegBuilder(cfg).validate()


def _mmseg_state(family, seed):
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import mmseg_checkpoints as mc

    keys = json.loads((mc.FIXTURES / f"{mc.fixture_name(family)}.json").read_text())["keys"]
    return mc.random_state(keys, seed)


def _recipe_model(name, opts=()):
    model_dir = name.split("_")[0]
    path = ROOT / "configs" / model_dir / "mmseg" / f"{name}.yml"
    return SegBuilder(Config(str(path), opts=list(opts))).model


@pytest.mark.parametrize("recipe", ["pspnet_r50-d8_4xb2-80k_cityscapes-512x1024",
                                    "pspnet_r50-d32_4xb2-80k_cityscapes-512x1024"])
def test_an_mmseg_pspnet_file_fits_both_the_d8_and_the_d32_recipe(recipe):
    """The tensors of a d8 and a d32 file have the same shapes: the recipe decides."""
    from paddleseg_ext.checkpoints.adapters import to_native

    model = _recipe_model(recipe)
    native, conv = to_native(_mmseg_state("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024", 3), model)
    assert set(native) == set(model.state_dict()) and not conv.unplaced
    assert "pspnet_r50-d32_4xb2-80k_cityscapes-512x1024" in conv.hint and "the recipe decides" in conv.hint


@pytest.mark.parametrize("recipe,opts,named", [
    # a PSPNet at output stride 32 without mmseg's dilations (an undilated ResNet)
    ("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024", ["model.backbone.output_stride=32"],
     "output_stride=32, dilations=[1, 1, 1, 1]"),
    ("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024", ["model.backbone.output_stride=16"],
     "output_stride=16, dilations=[1, 1, 1, 2]"),
    ("pspnet_r50-d32_4xb2-80k_cityscapes-512x1024", ["model.backbone.dilations=[1, 1, 1, 2]"],
     "output_stride=32, dilations=[1, 1, 1, 2]"),
    # mmseg builds its DANet at d8 only
    ("danet_r50-d8_4xb2-80k_cityscapes-512x1024",
     ["model.backbone.output_stride=32", "model.backbone.dilations=[1, 1, 2, 4]"],
     "output_stride=32, dilations=[1, 1, 2, 4]"),
])
def test_a_dilation_form_mmseg_does_not_build_is_refused(recipe, opts, named):
    from paddleseg_ext.checkpoints.adapters import to_native

    state = _mmseg_state(recipe.replace("-d32_", "-d8_"), 4)
    with pytest.raises(ValueError) as e:
        to_native(state, _recipe_model(recipe, opts), source="m.pth")
    msg = str(e.value)
    assert msg.count("\n") == 0 and msg.startswith("m.pth: detected an mmsegmentation")
    assert named in msg and "the tensors would fit a different function" in msg
    if recipe.startswith("pspnet"):
        assert ("mmseg: output_stride 8 with dilations [1, 1, 2, 4] or output_stride 32 with "
                "dilations [1, 1, 2, 4]") in msg
        assert "needs its d32 recipe" in msg
    else:
        assert "mmseg: output_stride 8 with dilations [1, 1, 2, 4], no multi_grid" in msg
