"""Reusable layers: shapes and argument checks."""

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from paddleseg_ext.models.layers import (AuxHead, ConvBN, ConvBNReLU, PPModule,
                                         SyncBatchNorm, resize_to)


@pytest.fixture(scope="module")
def x():
    paddle.seed(0)
    return paddle.randn([2, 16, 12, 12])


@pytest.mark.parametrize("k, stride, dilation, out_hw", [(1, 1, 1, 12), (3, 1, 1, 12),
                                                          (3, 2, 1, 6), (3, 1, 4, 12)])
def test_conv_bn_relu_shapes(x, k, stride, dilation, out_hw):
    y = ConvBNReLU(16, 8, k, stride=stride, dilation=dilation)(x)
    assert list(y.shape) == [2, 8, out_hw, out_hw]
    assert float(y.min()) >= 0.0


def test_conv_bn_keeps_negatives_and_has_no_bias(x):
    layer = ConvBN(16, 8, 3)
    assert layer._conv.bias is None
    assert float(layer(x).min()) < 0.0
    assert ConvBN(16, 8, 3, bias=True)._conv.bias is not None


def test_conv_bn_bad_arg():
    with pytest.raises(ValueError, match="kernel_size must be a positive int, got 0"):
        ConvBN(3, 8, 0)


def test_sync_batch_norm_on_cpu_is_batchnorm2d():
    bn = SyncBatchNorm(8)
    assert isinstance(bn, nn.BatchNorm2D) and not isinstance(bn, nn.SyncBatchNorm)
    assert set(bn.state_dict()) == {"weight", "bias", "_mean", "_variance"}


def test_aux_head_shape(x):
    head = AuxHead(16, num_classes=5)
    assert head.conv_bn_relu.out_channels == 256
    assert list(head(x).shape) == [2, 5, 12, 12]
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        AuxHead(16, 0)


@pytest.mark.parametrize("bins", [(1, 2, 3, 6), (1, 3), (2,)])
def test_ppmodule_shape(x, bins):
    ppm = PPModule(16, 24, bins)
    assert len(ppm.stages) == len(bins)
    # each branch reduces to in/len(bins) channels; bottleneck sees in + branches
    branch = 16 // len(bins)
    assert ppm.bottleneck._conv.weight.shape[1] == 16 + branch * len(bins)
    assert list(ppm(x).shape) == [2, 24, 12, 12]


def test_ppmodule_bad_bins():
    with pytest.raises(ValueError, match=r"bin_sizes must be a non-empty list .* got \[\]"):
        PPModule(16, 8, [])


def test_resize_to(x):
    assert resize_to(x, [12, 12]) is x
    assert list(resize_to(x, (25, 31), align_corners=True).shape) == [2, 16, 25, 31]
    assert list(resize_to(x, [6, 6], mode="nearest").shape) == [2, 16, 6, 6]


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 3, 4)])
def test_channel_softmax_equals_softmax_over_axis_1_with_its_gradient(shape):
    from paddleseg_ext.models.layers import channel_softmax

    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal(shape) * 4, dtype="float64", stop_gradient=False)
    g = paddle.to_tensor(rng.standard_normal(shape), dtype="float64")
    ref = paddle.nn.functional.softmax(x, axis=1)
    out = channel_softmax(x)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)
    (d_out,) = paddle.grad([out], [x], [g])
    (d_ref,) = paddle.grad([ref], [x], [g])
    np.testing.assert_allclose(d_out.numpy(), d_ref.numpy(), rtol=1e-10, atol=1e-14)


def test_channel_softmax_rejects_other_ranks():
    from paddleseg_ext.models.layers import channel_softmax

    with pytest.raises(ValueError, match="3-D or 4-D"):
        channel_softmax(paddle.zeros([2, 3]))
