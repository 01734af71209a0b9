"""ResNet_vd's stem switches: ``stem`` (deep 3x3 convs or one 7x7 conv) and ``stem_channels``.

The defaults must build today's ResNet-vd (same keys, shapes and function);
semseg's ``deep_base`` stem (64, 64, 128) and torchvision's 7x7 stem must have
the peers' shapes; bad values get one clear error naming the switch.
"""

import numpy as np
import paddle
import pytest

from paddleseg_ext.cvlibs.errors import ConfigError
from paddleseg_ext.models.backbones.resnet_vd import ResNet18_vd, ResNet50_vd


def _shapes(net):
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def test_defaults_are_todays_resnet_vd():
    paddle.seed(0)
    a = ResNet18_vd(output_stride=32)
    paddle.seed(0)
    b = ResNet18_vd(output_stride=32, stem="deep", stem_channels=[32, 32, 64])
    assert _shapes(a) == _shapes(b)
    assert [k for k in _shapes(a) if k.startswith("conv1")][::5] == [
        "conv1_1._conv.weight", "conv1_2._conv.weight", "conv1_3._conv.weight"]
    assert _shapes(a)["conv1_1._conv.weight"] == [32, 3, 3, 3]
    assert _shapes(a)["conv1_3._conv.weight"] == [64, 32, 3, 3]
    a.eval()
    b.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(1, 3, 37, 45)).astype("float32"))
    with paddle.no_grad():
        for fa, fb in zip(a(x), b(x)):
            np.testing.assert_array_equal(fa.numpy(), fb.numpy())


def test_semseg_deep_base_widths():
    net = ResNet50_vd(stem_channels=[64, 64, 128], shortcut="strided_conv")
    s = _shapes(net)
    assert s["conv1_1._conv.weight"] == [64, 3, 3, 3]
    assert s["conv1_2._conv.weight"] == [64, 64, 3, 3]
    assert s["conv1_3._conv.weight"] == [128, 64, 3, 3]
    assert s["bb_0_0.conv0._conv.weight"] == [64, 128, 1, 1]   # layer1 takes 128 channels
    assert s["bb_0_0.short._conv.weight"] == [256, 128, 1, 1]


def test_7x7_stem_shapes_and_strides():
    net = ResNet18_vd(output_stride=32, stem="7x7", shortcut="strided_conv",
                      identity_shortcut=True)
    s = _shapes(net)
    assert s["conv1._conv.weight"] == [64, 3, 7, 7]
    assert not any(k.startswith("conv1_") for k in s)
    assert "bb_0_0.short._conv.weight" not in s           # torchvision's layer1.0: identity
    net.eval()
    with paddle.no_grad():
        feats = net(paddle.zeros([1, 3, 64, 96]))
    assert [list(f.shape[2:]) for f in feats] == [[16, 24], [8, 12], [4, 6], [2, 3]]
    assert net.feat_strides == [4, 8, 16, 32]


@pytest.mark.parametrize("kwargs,named", [
    ({"stem": "7x7", "stem_channels": [64, 64, 128]}, "needs 1 width(s) for stem='7x7'"),
    ({"stem_channels": [64, 128]}, "needs 3 width(s) for stem='deep'"),
    ({"stem": "5x5"}, "stem must be one of 'deep', '7x7'"),
    ({"stem_channels": [64, 0, 128]}, "stem_channels"),
])
def test_bad_stem_values_are_one_clear_error(kwargs, named):
    with pytest.raises((ValueError, ConfigError), match=named.replace("(", r"\(").replace(")", r"\)")):
        ResNet18_vd(**kwargs)
