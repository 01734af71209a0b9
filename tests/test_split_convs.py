"""Exactness of the split PPM bottleneck and DANet's stacked branch-input conv (issue 13)."""

import numpy as np
import paddle
import pytest

from paddleseg_ext.models.danet import DAHead
from paddleseg_ext.models.layers.pyramid_pooling import PPModule


def _randomise_bn(layer):
    for sub in layer.sublayers():
        if isinstance(sub, paddle.nn.BatchNorm2D):
            sub._mean.set_value(paddle.randn(sub._mean.shape) * 0.1)
            sub._variance.set_value(paddle.rand(sub._variance.shape) + 0.5)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("hw", [(17, 23), (5, 4)])
def test_split_bottleneck_matches_concat(align_corners, hw):
    paddle.seed(0)
    m = PPModule(16, 8, (1, 2, 3, 6), align_corners=align_corners)
    _randomise_bn(m)
    x = paddle.randn([2, 16, *hw])
    for mode in ("eval", "train"):
        getattr(m, mode)()
        m.split_bottleneck = False
        ref = m(x).numpy()
        m.split_bottleneck = True
        assert _rel(ref, m(x).numpy()) < 1e-4
    m.eval()
    with paddle.no_grad():
        m.split_bottleneck = False
        ref = m(x).numpy()
        m.split_bottleneck = True
        assert _rel(ref, m(x).numpy()) < 1e-4


def test_split_bottleneck_gradients_match_concat():
    paddle.seed(0)
    m = PPModule(16, 8, (1, 2, 3, 6))
    m.train()
    x = paddle.randn([2, 16, 11, 13])
    x.stop_gradient = False
    grads = {}
    for split in (False, True):
        m.split_bottleneck = split
        m.clear_gradients()
        x.clear_gradient()
        (m(x) ** 2).sum().backward()
        grads[split] = [x.grad.numpy()] + [p.grad.numpy() for p in m.parameters() if p.grad is not None]
    for a, b in zip(grads[False], grads[True]):
        assert np.abs(a - b).max() <= 1e-4 * (np.abs(a).max() + 1e-6)


def test_split_bottleneck_traces_with_dynamic_size():
    paddle.seed(0)
    m = PPModule(16, 8, (1, 2, 3, 6))
    m.eval()
    static = paddle.jit.to_static(
        m, input_spec=[paddle.static.InputSpec([None, 16, None, None], "float32")], full_graph=True)
    x = paddle.randn([1, 16, 9, 14])
    m.split_bottleneck = False
    ref = m(x).numpy()
    assert _rel(ref, static(x).numpy()) < 1e-4


def test_dahead_stacked_branch_conv_matches_separate_convs():
    paddle.seed(0)
    head = DAHead(32, 5)
    _randomise_bn(head)
    x = paddle.randn([1, 32, 6, 7])
    for mode in ("eval", "train"):
        getattr(head, mode)()
        pam, cam = head._branch_inputs(x)
        assert _rel(head.pam_in(x).numpy(), pam.numpy()) < 1e-5
        assert _rel(head.cam_in(x).numpy(), cam.numpy()) < 1e-5
