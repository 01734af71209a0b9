"""The shared tolerance (tests/tolerance.py) holds for honest reorderings and catches bugs.

Both sides are checked on the computations the suite compares: a float32 reordering must stay
inside the budget with room to spare, and a planted mistake of the kind a rewrite or kernel
can make (one flipped 3x3 kernel, a BatchNorm folded without its shift, a PSA window off by
one cell) must leave it.
"""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddleseg_ext.models  # noqa: F401  (registers backbones)
from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.runtime.forms.fold_bn import fold_batch_norms
from paddleseg_ext.models.pspnet import PSPNet
from paddleseg_ext.ops import psa_mask_reference
import tolerance as tol


def _net():
    paddle.seed(11)
    net = PSPNet(5, backbone=ResNet18_vd(output_stride=8), bin_sizes=(1, 2, 3, 6), pp_out_channels=32)
    rng = np.random.default_rng(3)
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            c = layer._mean.shape[0]
            layer._mean.set_value(rng.normal(0, 0.3, c).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, c).astype("float32"))
    net.eval()
    return net


def _logits(net, x):
    with paddle.no_grad():
        return net(x)[0].numpy()


def test_the_budget_follows_the_formula():
    # lam * sqrt(depth * fan_in) * u per side, two sides, times the scale.
    assert tol.bound(10.0, 100, depth=4) == pytest.approx(2 * 6 * 20 * 2 ** -24 * 10)
    assert tol.bound(1, 100, winograd=True) == pytest.approx(tol.bound(1, 100) * tol.WINOGRAD_GROWTH)
    assert 20 < tol.WINOGRAD_GROWTH < 21
    assert tol.bound(1, 100, dtype="float64") < 1e-13
    with pytest.raises(ValueError, match="no unit roundoff"):
        tol.sum_error(4, "int8")


def test_float32_reorderings_stay_well_inside_the_budget():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 17, 19))
    w = rng.standard_normal((32, 64, 3, 3)) * 0.05
    exact = F.conv2d(paddle.to_tensor(x), paddle.to_tensor(w), padding=1).numpy()
    direct = F.conv2d(paddle.to_tensor(x.astype("float32")), paddle.to_tensor(w.astype("float32")),
                      padding=1).numpy()
    # im2col + one GEMM: the same terms summed in another order.
    cols = F.unfold(paddle.to_tensor(x.astype("float32")), [3, 3], paddings=1)  # [N, C*9, L]
    gemm = paddle.matmul(paddle.to_tensor(w.reshape(32, -1).astype("float32")), cols)
    gemm = gemm.numpy().reshape(exact.shape)
    budget = tol.bound(max(1.0, np.abs(exact).max()), 64 * 9)
    for got in (direct, gemm):
        assert np.abs(got - exact).max() < 0.25 * budget
    assert np.abs(direct - gemm).max() < 0.25 * budget


def test_a_network_rewrite_stays_inside_and_planted_bugs_leave_the_budget():
    net = _net()
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((1, 3, 48, 56)).astype("float32"))
    ref = _logits(net, x)
    budget = tol.network_bound(net, ref)

    # Honest: BatchNorm folded into the convolutions (another rounding of every weight).
    tol.assert_close(_logits(fold_batch_norms(net), x), ref, budget, "folded")

    # Planted: one 3x3 kernel of a middle block read flipped (correlation vs convolution).
    flipped = _net()
    conv = flipped.backbone.bb_2_0.conv1._conv
    conv.weight.set_value(conv.weight.numpy()[:, :, ::-1, ::-1].copy())
    with pytest.raises(AssertionError, match="rounding budget"):
        tol.assert_close(_logits(flipped, x), ref, budget, "flipped kernel")

    # Planted: a fold that forgets the BatchNorm shift of one layer (bias - mean * scale).
    folded = fold_batch_norms(_net())
    conv = folded.backbone.bb_1_0.conv0._conv
    assert conv.bias is not None
    conv.bias.set_value(np.zeros(conv.bias.shape, "float32"))
    with pytest.raises(AssertionError, match="rounding budget"):
        tol.assert_close(_logits(folded, x), ref, budget, "fold without shift")


def test_a_psa_window_off_by_one_leaves_the_budget():
    rng = np.random.default_rng(2)
    m = paddle.to_tensor(rng.standard_normal((1, 7 * 7, 9, 11)).astype("float32"))
    feat = paddle.to_tensor(rng.standard_normal((1, 8, 9, 11)).astype("float32"))

    def attend(mask):
        att = F.softmax(mask.reshape([1, 99, 99]), axis=1)
        return paddle.bmm(feat.reshape([1, 8, 99]), att).numpy()

    good = psa_mask_reference(m, 0, (7, 7))
    want = attend(good)
    budget = tol.bound(max(1.0, np.abs(want).max()), 99, depth=2)
    # Summed in another order (transposed twice): inside.
    tol.assert_close(attend(good.transpose([0, 2, 3, 1]).transpose([0, 3, 1, 2])), want, budget, "same")
    # The window one cell lower: out.
    shifted = paddle.roll(good, shifts=11, axis=1)
    with pytest.raises(AssertionError, match="rounding budget"):
        tol.assert_close(attend(shifted), want, budget, "window off by one row")


def test_argmax_check_ignores_near_ties_only():
    want = np.array([[[[1.0, 0.0]], [[1.0 + 1e-7, 2.0]]]])  # [1, 2 classes, 1, 2]
    got = np.array([[[[1.0 + 2e-7, 0.0]], [[1.0, 2.0]]]])
    tol.assert_argmax_agrees(got, want, 1e-6)  # pixel 0 is a tie within the budget
    got[0, :, 0, 1] = [3.0, 2.0]
    with pytest.raises(AssertionError, match="argmax differs at 1"):
        tol.assert_argmax_agrees(got, want, 1e-6)
