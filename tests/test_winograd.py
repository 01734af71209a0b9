"""Winograd F(2x2, 3x3) convolution (custom_ops/winograd, paddleseg_ext/ops/winograd.py).

The oracle is Paddle's own ``F.conv2d``: values and the gradients to input,
weight and bias must equal it (float64 1e-10, float32 1e-5 relative) for every
dilation the models use, odd sizes, sizes that are not a multiple of the
2d-row tile block and images smaller than one tile; the dispatch must engage
exactly where it is documented to and leave the rest to ``F.conv2d``.
"""

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from paddleseg_ext.models.layers import ConvBNReLU
from paddleseg_ext.runtime import ExecutionPolicy, policy_from_environment, prepare
from paddleseg_ext.runtime.forms import conv as conv_forms
from paddleseg_ext.ops import winograd as wg
import tolerance as tol


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module", autouse=True)
def _op():
    assert wg.is_winograd_available(build=True), wg._OP.state["reason"]


CASES = [  # n, c_in, c_out, h, w, dilation
    (2, 5, 7, 9, 11, 1),
    (1, 3, 4, 8, 8, 1),
    (1, 3, 4, 7, 6, 2),  # H, W < 2 blocks; last block partial
    (2, 6, 5, 16, 16, 2),
    (2, 4, 3, 13, 10, 4),  # 13 = 8 + 5: partial block holds min(5, 4) tile rows
    (1, 2, 2, 5, 3, 4),  # smaller than one 2d block
    (1, 2, 2, 1, 1, 1),
    (1, 3, 2, 2, 9, 8),
]


@pytest.mark.parametrize("n,c,co,h,w,d", CASES)
def test_forward_and_gradients_equal_conv2d_float64(n, c, co, h, w, d):
    rng = np.random.default_rng(h * 100 + w * 10 + d)
    x = paddle.to_tensor(rng.standard_normal((n, c, h, w)), stop_gradient=False)
    wt = paddle.to_tensor(rng.standard_normal((co, c, 3, 3)), stop_gradient=False)
    b = paddle.to_tensor(rng.standard_normal(co), stop_gradient=False)
    ref = F.conv2d(x, wt, b, padding=d, dilation=d)
    out = wg.winograd_conv3x3(x, wt, b, d)
    assert out.shape == ref.shape
    assert rel_err(out.numpy(), ref.numpy()) < 1e-10
    gy = paddle.to_tensor(rng.standard_normal(ref.shape))
    want = paddle.grad([ref], [x, wt, b], [gy])
    got = paddle.grad([out], [x, wt, b], [gy])
    for name, g, r in zip(("x", "weight", "bias"), got, want):
        assert rel_err(g.numpy(), r.numpy()) < 1e-10, name


def test_float32_within_rounding_and_no_uninitialised_gradient():
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((2, 64, 33, 30)).astype("float32"), stop_gradient=False)
    wt = paddle.to_tensor((0.05 * rng.standard_normal((64, 64, 3, 3))).astype("float32"),
                          stop_gradient=False)
    for d in (1, 2, 4):
        ref = F.conv2d(x, wt, padding=d, dilation=d)
        out = wg.winograd_conv3x3(x, wt, None, d)
        # Forward: 64 * 9 terms per output; Winograd's transforms grow the rounding error.
        assert rel_err(out.numpy(), ref.numpy()) < tol.bound(1, 64 * 9, winograd=True)
        # The input adjoint accumulates into a buffer: repeated calls must not
        # carry anything over (an unwritten or stale entry would differ here).
        for _ in range(2):
            gx, gw = paddle.grad([out.sum()], [x, wt], retain_graph=True)
            rx, rw = paddle.grad([ref.sum()], [x, wt], retain_graph=True)
            assert np.isfinite(gx.numpy()).all()
            # dx sums 64 * 9 terms, dW every output position (2 * 33 * 30).
            assert rel_err(gx.numpy(), rx.numpy()) < tol.bound(1, 64 * 9, winograd=True)
            assert rel_err(gw.numpy(), rw.numpy()) < tol.bound(1, 2 * 33 * 30, winograd=True)


def test_weight_transform_matches_the_paper():
    # U = G g G^T for every (C_out, C_in) kernel, written out with numpy, in the
    # [16, C_out, C_in] layout; its gradient is G^T dU G per kernel.
    rng = np.random.default_rng(1)
    g = rng.standard_normal((3, 2, 3, 3))
    G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
    w = paddle.to_tensor(g, stop_gradient=False)
    u_t = wg.winograd_transform_weight(w)
    u = u_t.numpy()
    assert u.shape == (16, 3, 2)
    du = rng.standard_normal(u.shape)
    (dw,) = paddle.grad([u_t], [w], [paddle.to_tensor(du)])
    for o in range(3):
        for i in range(2):
            np.testing.assert_allclose(u[:, o, i].reshape(4, 4), G @ g[o, i] @ G.T, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(dw.numpy()[o, i], G.T @ du[:, o, i].reshape(4, 4) @ G,
                                       rtol=1e-12, atol=1e-12)


def test_bad_input_gets_a_clear_error():
    module, _ = wg._OP.load_library()
    with pytest.raises(Exception, match="4-D"):
        module.winograd_input_transform(paddle.zeros([2, 3, 4]), 1)
    with pytest.raises(Exception, match="tiles"):
        module.winograd_output_transform(paddle.zeros([16, 2, 5]), 1, 4, 4, 1)


def _applies(weight_shape, stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1):
    return conv_forms.winograd_eligible(weight_shape, stride, padding, dilation, groups)


def test_the_rewrite_engages_only_where_documented(monkeypatch):
    assert _applies([64, 64, 3, 3])
    assert _applies([128, 256, 3, 3], padding=(4, 4, 4, 4), dilation=(4, 4))
    assert not _applies([64, 64, 3, 3], stride=(2, 2))
    assert not _applies([64, 64, 3, 3], padding=(2, 2, 2, 2))  # not "same"
    assert not _applies([64, 64, 3, 3], padding=(1, 0, 1, 1))
    assert not _applies([64, 64, 3, 3], padding=(2, 2, 2, 2), dilation=(2, 1))
    assert not _applies([64, 32, 3, 3], groups=2)
    assert not _applies([64, 64, 1, 1], padding=(0, 0, 0, 0))
    assert not _applies([64, 64, 5, 5], padding=(2, 2, 2, 2))
    assert not _applies([32, 64, 3, 3])  # too few channels to pay for the transforms
    # The layer runs the op only on float32/float64 CPU tensors.
    layer = prepare(nn.Conv2D(64, 64, 3, padding=1), ExecutionPolicy(), copy_model=True)
    assert isinstance(layer, conv_forms.FastConv2D) and layer.winograd
    calls = []
    real = wg.winograd_conv3x3
    monkeypatch.setattr(wg, "winograd_conv3x3", lambda *a: calls.append(1) or real(*a))
    layer(paddle.randn([1, 64, 6, 6]))
    assert calls == [1]
    # Off by the policy (PADDLESEG_EXT_WINOGRAD=0): the plain conv, untouched.
    monkeypatch.setenv("PADDLESEG_EXT_WINOGRAD", "0")
    policy = policy_from_environment()
    assert not policy.winograd
    assert type(prepare(nn.Conv2D(64, 64, 3, padding=1), policy, copy_model=True)) is nn.Conv2D
    monkeypatch.setenv("PADDLESEG_EXT_WINOGRAD", "maybe")
    with pytest.raises(ValueError, match="PADDLESEG_EXT_WINOGRAD must be 0 or 1"):
        policy_from_environment()


def test_convbnrelu_trains_the_same_with_and_without(monkeypatch):
    """A layer's forward, input gradient and parameter gradients: Winograd vs F.conv2d."""
    paddle.seed(3)
    plain = ConvBNReLU(64, 64, 3, padding=2, dilation=2)
    fast = prepare(plain, ExecutionPolicy(winograd=True), copy_model=True)
    x0 = paddle.randn([2, 64, 19, 17])
    calls = []
    real = wg.winograd_conv3x3
    monkeypatch.setattr(wg, "winograd_conv3x3", lambda *a: calls.append(1) or real(*a))

    def run(layer):
        x = x0.clone()
        x.stop_gradient = False
        y = layer(x)
        (y * y).sum().backward()
        grads = [x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters() if p.grad is not None]
        layer.clear_gradients()
        return y.numpy(), grads

    y_w, g_w = run(fast)
    assert calls, "the 3x3 'same' conv did not run as Winograd"
    calls.clear()
    y_c, g_c = run(plain)
    assert not calls
    # conv (64 * 9 terms) then training-mode BN (statistics over 2 * 19 * 17 positions);
    # the backward runs both again.
    assert rel_err(y_w, y_c) < tol.bound(1, 2 * 19 * 17, depth=2, winograd=True)
    assert len(g_w) == len(g_c) == 4  # x, conv weight, bn weight, bn bias
    for a, b in zip(g_w, g_c):
        assert rel_err(a, b) < tol.bound(1, 2 * 19 * 17, depth=4, winograd=True)


def test_exported_programs_keep_conv2d():
    layer = ConvBNReLU(64, 64, 3, padding=1)
    layer.eval()
    traced = prepare(layer, ExecutionPolicy(target="export"))
    assert type(traced._conv) is nn.Conv2D
    static = paddle.jit.to_static(traced, input_spec=[paddle.static.InputSpec([1, 64, 8, 8])],
                                  full_graph=True)
    program = static.forward.concrete_program.main_program
    ops = [op.name() if callable(getattr(op, "name", None)) else op.type
           for op in program.global_block().ops]
    assert any("conv2d" in o for o in ops), ops
    assert not any("winograd" in o for o in ops), ops
    x = paddle.randn([1, 64, 8, 8])
    with paddle.no_grad():
        want = prepare(layer, ExecutionPolicy(target="infer", fold_bn=False))(x).numpy()
        tol.assert_close(static(x).numpy(), want, tol.network_bound(layer, want), "traced vs dygraph")
