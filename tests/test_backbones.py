"""ResNet-vd backbones and pretrained-weight loading."""

import logging

import numpy as np
import paddle
import pytest

import paddleseg_ext  # noqa: F401  (registers components)
from paddleseg_ext.cvlibs import manager
from paddleseg_ext.models.backbones import (ResNet18_vd, ResNet34_vd, ResNet50_vd,
                                            ResNet101_vd, ResNet_vd)
from paddleseg_ext.utils.pretrained import load_pretrained


def n_trainable(layer):
    return sum(int(p.numel()) for p in layer.parameters() if not p.stop_gradient)


@pytest.fixture(scope="module")
def x():
    paddle.seed(0)
    return paddle.randn([1, 3, 64, 64])


@pytest.mark.parametrize("os_, strides", [(8, [4, 8, 8, 8]), (16, [4, 8, 16, 16]),
                                          (32, [4, 8, 16, 32])])
def test_feature_shapes_and_strides(x, os_, strides):
    net = ResNet18_vd(output_stride=os_)
    assert net.feat_strides == strides
    assert net.feat_channels == [64, 128, 256, 512]
    feats = net(x)
    assert len(feats) == 4
    for f, c, s in zip(feats, net.feat_channels, strides):
        assert list(f.shape) == [1, c, 64 // s, 64 // s]


def test_bottleneck_channels():
    assert ResNet_vd(depth=50).feat_channels == [256, 512, 1024, 2048]


def test_bad_output_stride_message():
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32, got 4"):
        ResNet18_vd(output_stride=4)


@pytest.mark.parametrize("kwargs, match", [
    ({"in_channels": 0}, "in_channels must be a positive int, got 0"),
    ({"multi_grid": (1, 2, 4)}, "multi_grid must have 2 entries"),
    ({"multi_grid": (1, 0)}, "multi_grid must be a non-empty list of positive ints"),
])
def test_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet18_vd(**kwargs)


def test_bad_depth():
    with pytest.raises(ValueError, match="depth must be one of .* got 42"):
        ResNet_vd(depth=42)


def test_in_channels_4():
    feats = ResNet18_vd(in_channels=4, output_stride=16)(paddle.randn([1, 4, 64, 64]))
    assert list(feats[-1].shape) == [1, 512, 4, 4]


def _dil(net, block, conv="conv0"):
    return list(getattr(net._sub_layers[block], conv)._conv._dilation)


def test_dilation_and_multi_grid_applied():
    net = ResNet18_vd(output_stride=8, multi_grid=(1, 2))
    assert _dil(net, "bb_1_0") == [1, 1]
    assert _dil(net, "bb_2_0") == [2, 2] and _dil(net, "bb_2_1", "conv1") == [2, 2]
    assert _dil(net, "bb_3_0") == [4, 4] and _dil(net, "bb_3_1") == [8, 8]
    assert list(net._sub_layers["bb_2_0"].conv0._conv._stride) == [1, 1]
    os16 = ResNet18_vd(output_stride=16, multi_grid=(2, 4))
    assert _dil(os16, "bb_2_0") == [1, 1]
    assert _dil(os16, "bb_3_0") == [4, 4] and _dil(os16, "bb_3_1") == [8, 8]
    # multi-grid at os32 must not remove the stage-4 stride
    assert ResNet18_vd(output_stride=32, multi_grid=(1, 2)).feat_strides[-1] == 32


def test_paddleseg_key_names():
    keys = ResNet18_vd().state_dict().keys()
    for k in ("conv1_1._conv.weight", "conv1_3._batch_norm._variance",
              "bb_0_0.short._conv.weight", "bb_3_1.conv1._batch_norm._mean"):
        assert k in keys


# Trainable parameters (BN running stats excluded), output_stride 8.
PINNED = {ResNet18_vd: 11_199_968, ResNet34_vd: 21_308_128, ResNet50_vd: 23_527_264,
          ResNet101_vd: 42_519_392}


@pytest.mark.parametrize("factory", list(PINNED), ids=lambda f: f.__name__)
def test_pinned_parameter_counts(factory):
    assert n_trainable(factory(output_stride=8)) == PINNED[factory]


def test_registered_and_no_double_registration():
    for name in ("ResNet18_vd", "ResNet34_vd", "ResNet50_vd", "ResNet101_vd"):
        assert name in manager.BACKBONES
    with pytest.raises(KeyError, match="already registered"):
        manager.BACKBONES.register(lambda **kw: None, name="ResNet18_vd")


def test_pretrained_round_trip(tmp_path):
    paddle.seed(1)
    src = ResNet18_vd()
    path = tmp_path / "r18.pdparams"
    paddle.save(src.state_dict(), str(path))
    dst = ResNet18_vd()
    report = load_pretrained(dst, str(path))
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == []
    assert len(report["loaded"]) == len(src.state_dict())
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), dst.state_dict()[k].numpy())
    # through the constructor, and from a directory holding model.pdparams (archive layout)
    (tmp_path / "ckpt").mkdir()
    paddle.save(src.state_dict(), str(tmp_path / "ckpt" / "model.pdparams"))
    via_ctor = ResNet18_vd(pretrained=str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(via_ctor.conv1_1._conv.weight.numpy(),
                                  src.conv1_1._conv.weight.numpy())


def test_pretrained_report_lists_bad_keys(tmp_path, caplog):
    net = ResNet18_vd()
    state = net.state_dict()
    before = net.conv1_2._conv.weight.numpy().copy()
    state["fc.weight"] = paddle.zeros([512, 10])
    state["conv1_2._conv.weight"] = paddle.zeros([32, 32, 1, 1])
    del state["bb_3_1.conv1._batch_norm._mean"]
    path = tmp_path / "bad.pdparams"
    paddle.save(state, str(path))
    with caplog.at_level(logging.WARNING, logger="paddleseg_ext"):
        report = load_pretrained(net, str(path))
    assert report["unexpected"] == ["fc.weight"]
    assert report["missing"] == ["bb_3_1.conv1._batch_norm._mean"]
    assert report["mismatched"] == [("conv1_2._conv.weight", (32, 32, 1, 1), (32, 32, 3, 3))]
    np.testing.assert_array_equal(net.conv1_2._conv.weight.numpy(), before)  # skipped
    text = caplog.text
    assert "fc.weight" in text and "conv1_2._conv.weight" in text and "bb_3_1" in text


def test_pretrained_missing_file(tmp_path):
    path = str(tmp_path / "nope.pdparams")
    with pytest.raises(FileNotFoundError, match="nope.pdparams"):
        load_pretrained(ResNet18_vd(), path)
    with pytest.raises(FileNotFoundError, match="nope.pdparams"):
        ResNet18_vd(pretrained=path)


def test_pretrained_url_goes_through_paddle_download(tmp_path, monkeypatch):
    """URLs are resolved by paddle's downloader (stubbed: no network in tests);
    PaddleSeg's archives unpack to a directory holding model.pdparams."""
    import paddle.utils.download as download

    src = ResNet18_vd()
    (tmp_path / "resnet18_vd").mkdir()
    paddle.save(src.state_dict(), str(tmp_path / "resnet18_vd" / "model.pdparams"))
    seen = []
    monkeypatch.setattr(download, "get_weights_path_from_url",
                        lambda url: seen.append(url) or str(tmp_path / "resnet18_vd"))
    url = "https://example.invalid/resnet18_vd.tar.gz"
    report = load_pretrained(ResNet18_vd(), url)
    assert seen == [url]
    assert report["path"].endswith("model.pdparams") and not report["missing"]


# ------------------------------------------------ mmsegmentation ResNetV1c switches
def test_variant_switches_default_to_resnet_vd():
    net = ResNet18_vd(output_stride=8)
    assert (net.shortcut, net.identity_shortcut, net.contract_dilation,
            net.dilate_basic_second_conv) == ("avg_pool", False, False, True)
    first = net._sub_layers["bb_1_0"]
    assert first.avg_down and list(first.short._conv._stride) == [1, 1]
    assert net._sub_layers["bb_0_0"].short is not None  # every stage's first block projects
    assert not net._sub_layers["bb_2_0"].avg_down  # stride 1 (dilated): no pooling


def test_strided_conv_shortcut_is_a_strided_1x1_conv_without_pooling(x):
    paddle.seed(1)
    net = ResNet18_vd(output_stride=32, shortcut="strided_conv")
    block = net._sub_layers["bb_1_0"]
    assert not block.avg_down and list(block.short._conv._stride) == [2, 2]
    block.eval()
    y = paddle.randn([1, 64, 9, 11])
    _, identity = block.residual(y)
    # A strided 1x1 conv reads every other pixel: the stride-1 conv, subsampled.
    full = paddle.nn.functional.conv2d(y, block.short._conv.weight)
    want = block.short._batch_norm(full[:, :, ::2, ::2])
    np.testing.assert_allclose(identity.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    assert [list(f.shape) for f in net(x)] == [[1, c, 64 // s, 64 // s] for c, s in
                                               zip(net.feat_channels, net.feat_strides)]


def test_identity_shortcut_only_where_shapes_agree():
    r18 = ResNet18_vd(identity_shortcut=True)
    assert r18._sub_layers["bb_0_0"].short is None  # 64 -> 64, stride 1
    assert all(r18._sub_layers[f"bb_{s}_0"].short is not None for s in (1, 2, 3))
    assert "bb_0_0.short._conv.weight" not in r18.state_dict()
    r50 = ResNet50_vd(identity_shortcut=True)
    assert r50._sub_layers["bb_0_0"].short is not None  # 64 -> 256
    block = r18._sub_layers["bb_0_0"]
    block.eval()
    y = paddle.randn([1, 64, 8, 8])
    assert block.residual(y)[1] is y


def test_contract_dilation_halves_the_first_block_of_a_dilated_stage():
    net = ResNet18_vd(output_stride=8, contract_dilation=True, dilate_basic_second_conv=False)
    assert _dil(net, "bb_2_0") == [1, 1] and _dil(net, "bb_2_1") == [2, 2]
    assert _dil(net, "bb_3_0") == [2, 2] and _dil(net, "bb_3_1") == [4, 4]
    assert _dil(net, "bb_3_1", "conv1") == [1, 1]  # mmseg BasicBlock's conv2 is undilated
    r50 = ResNet50_vd(output_stride=8, contract_dilation=True)
    assert _dil(r50, "bb_2_0", "conv1") == [1, 1] and _dil(r50, "bb_3_0", "conv1") == [2, 2]
    assert _dil(r50, "bb_3_2", "conv1") == [4, 4]
    os16 = ResNet18_vd(output_stride=16, contract_dilation=True)
    assert _dil(os16, "bb_2_0") == [1, 1] and _dil(os16, "bb_3_0") == [1, 1]


@pytest.mark.parametrize("kwargs, match", [
    ({"shortcut": "pool"}, "shortcut must be one of 'avg_pool', 'strided_conv', got 'pool'"),
    ({"identity_shortcut": 1}, "identity_shortcut must be True or False, got 1"),
    ({"contract_dilation": "yes"}, "contract_dilation must be True or False"),
    ({"contract_dilation": True, "multi_grid": (1, 2)}, "cannot be combined with multi_grid"),
])
def test_bad_variant_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet18_vd(**kwargs)
