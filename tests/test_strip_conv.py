"""Memory-bounded inference convolution (row strips), in-place inference and PSANet's
split concat: the ``conv``, ``inplace`` and ``psanet_inference`` forms.

The oracle is Paddle's own whole convolution (``F.conv2d`` / ``nn.Conv2D``): strips must
equal it per pixel within the rounding budget (tests/tolerance.py), must really engage
(strip counts), and must never reach training or exported programs.
"""

import math
import os
import sys

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

import paddleseg_ext.models  # noqa: F401  (registers backbones)
from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.models.layers import ConvBN, ConvBNReLU
from paddleseg_ext.models.psanet import PSANet
from paddleseg_ext.runtime import ExecutionPolicy, policy_from_environment, prepare
from paddleseg_ext.runtime.forms.conv import (FastConv2D, conv2d_over_concat, strip_conv2d,
                                              strip_stats)
from paddleseg_ext.runtime.forms.inplace import InPlaceConvBNReLU, batch_norm_eval_
import tolerance as tol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reset():
    strip_stats.update(tiled_calls=0, strips=0)


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# (kernel, stride, dilation, (top, bottom, left, right), groups, H, W)
CASES = [
    (3, 1, 1, (1, 1, 1, 1), 1, 17, 13),
    (3, 2, 1, (1, 1, 1, 1), 1, 19, 11),     # stride 2, odd sizes
    (3, 1, 2, (2, 2, 2, 2), 2, 23, 9),      # dilation 2, groups
    (3, 1, 4, (4, 4, 4, 4), 1, 21, 15),     # layer4's dilation
    (5, 3, 2, (4, 1, 0, 3), 1, 31, 14),     # asymmetric padding, stride 3
    (3, 1, 1, (6, 6, 1, 1), 1, 7, 5),       # strips that read padding only
    (4, 2, 3, (2, 3, 1, 0), 4, 29, 17),     # even kernel, groups 4
    (1, 2, 1, (0, 0, 0, 0), 1, 9, 9),       # strided 1x1 (has a column buffer)
    (7, 2, 1, (3, 3, 3, 3), 1, 33, 27),     # a stem-like 7x7/2
]


def _case_tensors(case, dtype, seed=0):
    k, s, d, pad, g, h, w = case
    rng = np.random.default_rng(seed)
    c_in, c_out = 8, 8 if g == 4 else 6
    x = rng.standard_normal((2, c_in, h, w)).astype(dtype)
    wt = rng.standard_normal((c_out, c_in // g, k, k)).astype(dtype)
    b = rng.standard_normal((c_out,)).astype(dtype)
    return [paddle.to_tensor(v) for v in (x, wt, b)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rows", [1, 2, 5])
def test_strips_equal_the_whole_convolution(case, dtype, rows):
    k, s, d, pad, g, h, w = case
    x, wt, b = _case_tensors(case, dtype)
    want = F.conv2d(x, wt, b, stride=s, padding=list(pad), dilation=d, groups=g)
    h_out, w_out = want.shape[2], want.shape[3]
    row_bytes = (8 // g) * k * k * w_out * x.element_size()
    reset()
    with paddle.no_grad():
        got = strip_conv2d(x, wt, b, [s, s], pad, [d, d], g, budget_bytes=rows * row_bytes)
    assert got.shape == want.shape
    assert rel_err(got.numpy(), want.numpy()) <= tol.bound(1, (8 // g) * k * k, dtype=dtype)
    strips = math.ceil(h_out / rows)
    assert strip_stats["strips"] == (strips if strips > 1 else 0)


def test_no_strips_when_the_buffer_fits_or_the_budget_is_off():
    x, wt, b = _case_tensors(CASES[0], "float32")
    reset()
    with paddle.no_grad():
        strip_conv2d(x, wt, b, [1, 1], (1, 1, 1, 1), [1, 1], 1, budget_bytes=2 ** 30)
        strip_conv2d(x, wt, b, [1, 1], (1, 1, 1, 1), [1, 1], 1, budget_bytes=0)
        # A 1x1 stride-1 conv has no column buffer at all.
        strip_conv2d(x, paddle.randn([4, 8, 1, 1]), None, [1, 1], (0, 0, 0, 0), [1, 1], 1,
                     budget_bytes=1)
    assert strip_stats["strips"] == 0


def infer(budget, **policy):
    """An inference policy with the strip budget (bytes), BN folding and Winograd off."""
    policy.setdefault("fold_bn", False)
    policy.setdefault("winograd", False)
    return ExecutionPolicy(target="infer", conv_budget_bytes=budget, **policy)


def test_the_form_keeps_conv2d_parameters_and_state_dict():
    paddle.seed(3)
    block = ConvBNReLU(6, 5, 3)
    keys = sorted(block.state_dict())
    fast = prepare(block, infer(1))
    assert isinstance(fast._conv, FastConv2D) and isinstance(fast._conv, nn.Conv2D)
    assert sorted(fast.state_dict()) == keys == ["_batch_norm._mean", "_batch_norm._variance",
                                                 "_batch_norm.bias", "_batch_norm.weight",
                                                 "_conv.weight"]
    assert type(block._conv) is nn.Conv2D  # the model itself is untouched


@pytest.mark.parametrize("padding", [1, [2, 0], [2, 1, 0, 3]])
def test_strips_engage_in_inference_and_never_in_training(padding):
    paddle.seed(4)
    plain = nn.Conv2D(6, 5, 3, stride=1, padding=padding, dilation=2)
    x = paddle.randn([1, 6, 19, 12])
    strip = prepare(plain, infer(1))
    reset()
    with paddle.no_grad():
        got = strip(x)
        want = plain(x)
    assert strip_stats["strips"] == want.shape[2] > 1
    assert rel_err(got.numpy(), want.numpy()) <= tol.bound(1, 6 * 9)
    # Training: no strips (budget 0 whatever the policy says), bit-identical values and grads.
    trained = prepare(plain, ExecutionPolicy(conv_budget_bytes=1, winograd=False), copy_model=True)
    assert type(trained) is nn.Conv2D  # nothing to do: no Winograd, no strips
    reset()
    xg = x.clone()
    xg.stop_gradient = False
    ys = trained(xg)
    assert strip_stats["strips"] == 0
    np.testing.assert_array_equal(ys.numpy(), plain(x).numpy())


def test_non_zero_padding_modes_keep_the_plain_conv():
    conv = nn.Conv2D(3, 4, 3, padding=1, padding_mode="reflect")
    assert type(prepare(conv, infer(1))) is nn.Conv2D


def test_budget_comes_from_the_policy_and_the_environment(monkeypatch):
    monkeypatch.setenv("PADDLESEG_EXT_CONV_BUDGET_MB", "2")
    assert policy_from_environment().conv_budget_bytes == 2 * 2 ** 20
    monkeypatch.setenv("PADDLESEG_EXT_CONV_BUDGET_MB", "lots")
    with pytest.raises(ValueError, match="PADDLESEG_EXT_CONV_BUDGET_MB must be a number of MiB"):
        policy_from_environment()
    monkeypatch.delenv("PADDLESEG_EXT_CONV_BUDGET_MB")
    assert policy_from_environment().conv_budget_bytes == 512 * 2 ** 20
    with pytest.raises(ValueError, match="conv_budget_bytes must be an int >= 0"):
        ExecutionPolicy(conv_budget_bytes=-1)


def test_conv_over_concat_equals_conv_of_concat():
    paddle.seed(5)
    conv = nn.Conv2D(10, 4, 3, padding=2, dilation=2)
    parts = [paddle.randn([2, 3, 13, 11]), paddle.randn([2, 7, 13, 11])]
    with paddle.no_grad():
        want = conv(paddle.concat(parts, axis=1))
        reset()
        got = conv2d_over_concat(conv, parts, budget_bytes=1)
        assert strip_stats["tiled_calls"] == 2  # one per part, each in strips
    assert rel_err(got.numpy(), want.numpy()) <= tol.bound(1, 10 * 9)
    with pytest.raises(ValueError, match="channels"), paddle.no_grad():
        conv2d_over_concat(conv, parts[:1] + parts[:1])


def _trained_looking_bn(c, seed):
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm2D(c)
    for name, lo, hi in (("weight", 0.5, 2.0), ("bias", -1.0, 1.0), ("_mean", -1.0, 1.0),
                         ("_variance", 0.1, 3.0)):
        getattr(bn, name).set_value(rng.uniform(lo, hi, c).astype("float32"))
    bn.eval()
    return bn


def test_batch_norm_in_place_equals_the_layer():
    bn = _trained_looking_bn(6, 8)
    x = paddle.randn([2, 6, 9, 7])
    want = bn(x).numpy()
    y = x.clone()
    with paddle.no_grad():
        got = batch_norm_eval_(y, bn)
    assert got is y  # written in place
    assert rel_err(got.numpy(), want) <= tol.bound(1, 1)
    bn.train()  # training-mode BN: the layer itself, input untouched
    with paddle.no_grad():
        z = x.clone()
        out = batch_norm_eval_(z, bn)
    assert out is not z
    np.testing.assert_array_equal(z.numpy(), x.numpy())


def test_in_place_conv_bn_relu_equals_the_layer():
    paddle.seed(9)
    block = ConvBNReLU(5, 6, 3, stride=2)
    block._batch_norm = _trained_looking_bn(6, 9)
    block.eval()
    x = paddle.randn([2, 5, 21, 18])
    want = block(x).numpy()
    fast = prepare(block, infer(0))
    assert isinstance(fast, InPlaceConvBNReLU)
    with paddle.no_grad():
        got = fast(x).numpy()
    assert rel_err(got, want) <= tol.bound(1, 5 * 9, depth=2)


def test_backbone_inference_form_matches_and_keep_frees_stages():
    paddle.seed(6)
    bb = ResNet18_vd(output_stride=8)
    bb.eval()
    x = paddle.randn([1, 3, 45, 37])
    with paddle.no_grad():
        plain = [f.numpy() for f in bb(x)]
        fast = prepare(bb, infer(0))
        without = [f.numpy() for f in fast(x)]
        kept = fast(x, keep=(3,))
    depth, fan_in = tol.network_shape(bb)
    for a, b in zip(plain, without):
        assert rel_err(b, a) <= tol.bound(1, fan_in, depth)
    assert kept[:3] == [None, None, None]
    np.testing.assert_array_equal(kept[3].numpy(), without[3])


def _small_psanet():
    paddle.seed(7)
    return PSANet(num_classes=5, backbone=ResNet18_vd(output_stride=8), mask_h=9, mask_w=11,
                  shrink_factor=2)


def test_psanet_eval_tiles_and_matches():
    net = _small_psanet()
    net.eval()
    x = paddle.randn([1, 3, 97, 81])
    with paddle.no_grad():
        reset()
        want = prepare(net, infer(0, psa_impl="paddle"))(x)[0].numpy()
        assert strip_stats["strips"] == 0
        got = prepare(net, infer(4096, psa_impl="paddle"))(x)[0].numpy()
    # Every 3x3 conv (stem, blocks, head split over [x, ctx]) ran in strips.
    assert strip_stats["tiled_calls"] >= 20 and strip_stats["strips"] > 100
    bound = tol.network_bound(net, want, attention_fan_in=13 * 11)
    tol.assert_close(got, want, bound, "strips vs whole convs")
    tol.assert_argmax_agrees(got, want, bound)


def test_export_keeps_plain_convs_and_matches_tiled_dygraph(tmp_path):
    from paddleseg_ext.core.export import export

    net = _small_psanet()
    net.eval()
    xs = [paddle.randn([1, 3, 77, 65]), paddle.randn([2, 3, 40, 56])]
    tiled = prepare(net, infer(4096, psa_impl="paddle"))
    reset()
    with paddle.no_grad():
        want = [tiled(x)[0].numpy() for x in xs]
    assert strip_stats["strips"] > 0
    reset()
    deploy = export(net, str(tmp_path / "exp"), [], output_op="none",
                    policy=ExecutionPolicy(psa_impl="paddle", conv_budget_bytes=4096))
    assert strip_stats["strips"] == 0  # the export target has no strips: one conv op per layer
    assert not any(r.startswith(("conv", "inplace")) for r in deploy["Deploy"]["rewrites"])
    loaded = paddle.jit.load(str(tmp_path / "exp" / "model"))
    for x, ref in zip(xs, want):
        got = loaded(x)
        got = got[0] if isinstance(got, (list, tuple)) else got
        tol.assert_close(got.numpy(), ref, tol.network_bound(net, ref, attention_fan_in=10 * 9),
                         "traced vs dygraph")
    sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))
    from infer import DeployConfig, Predictor

    pred = Predictor(DeployConfig(str(tmp_path / "exp" / "deploy.yaml")), "cpu", cpu_threads=1)
    for x, ref in zip(xs, want):
        got = pred.run(x.numpy())
        assert got.shape == ref.shape
        bound = tol.network_bound(net, ref, attention_fan_in=10 * 9)
        tol.assert_close(got, ref, bound, "Paddle Inference vs dygraph")
        tol.assert_argmax_agrees(got, ref, bound)
