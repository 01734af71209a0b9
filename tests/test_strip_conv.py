"""Memory-bounded inference convolution (StripConv2D) and the PSANet head's split concat.

The oracle is Paddle's own whole convolution (``F.conv2d`` / ``nn.Conv2D``):
strips must equal it per pixel (float64 1e-12, float32 1e-5 relative), must
really engage (strip counts), and must leave training, gradients and exported
programs as they were.
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
from paddleseg_ext.models.layers import ConvBN, ConvBNReLU, conv_memory_budget
from paddleseg_ext.models.layers import strip_conv
from paddleseg_ext.models.layers.norm import batch_norm_eval_
from paddleseg_ext.models.layers.strip_conv import (StripConv2D, conv2d_over_concat,
                                                    set_conv_memory_budget, strip_conv2d,
                                                    strip_stats)
from paddleseg_ext.models.psanet import PSANet
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


def test_layer_keeps_conv2d_parameters_and_state_dict():
    paddle.seed(3)
    plain = nn.Conv2D(6, 5, 3, stride=2, padding=1, dilation=1, groups=1)
    strip = StripConv2D(6, 5, 3, stride=2, padding=1, dilation=1, groups=1)
    assert isinstance(strip, nn.Conv2D)
    assert sorted(plain.state_dict()) == sorted(strip.state_dict()) == ["bias", "weight"]
    strip.set_state_dict(plain.state_dict())
    block = ConvBNReLU(6, 5, 3)
    assert isinstance(block._conv, StripConv2D)
    assert sorted(block.state_dict()) == ["_batch_norm._mean", "_batch_norm._variance",
                                          "_batch_norm.bias", "_batch_norm.weight",
                                          "_conv.weight"]


@pytest.mark.parametrize("padding", [1, [2, 0], [2, 1, 0, 3]])
def test_layer_engages_under_no_grad_only(padding):
    paddle.seed(4)
    plain = nn.Conv2D(6, 5, 3, stride=1, padding=padding, dilation=2)
    strip = StripConv2D(6, 5, 3, stride=1, padding=padding, dilation=2)
    strip.set_state_dict(plain.state_dict())
    x = paddle.randn([1, 6, 19, 12])
    with set_conv_memory_budget(1):
        reset()
        with paddle.no_grad():
            got = strip(x)
            want = plain(x)
        assert strip_stats["strips"] == want.shape[2] > 1
        assert rel_err(got.numpy(), want.numpy()) <= tol.bound(1, 6 * 9)

        # With autograd on: the plain conv, bit-identical values and gradients.
        reset()
        xg = x.clone()
        xg.stop_gradient = False
        xp = x.clone()
        xp.stop_gradient = False
        ys, yp = strip(xg), plain(xp)
        assert strip_stats["strips"] == 0
        np.testing.assert_array_equal(ys.numpy(), yp.numpy())
        (ys * ys).sum().backward()
        (yp * yp).sum().backward()
        np.testing.assert_array_equal(xg.grad.numpy(), xp.grad.numpy())
        np.testing.assert_array_equal(strip.weight.grad.numpy(), plain.weight.grad.numpy())
        np.testing.assert_array_equal(strip.bias.grad.numpy(), plain.bias.grad.numpy())


def test_non_zero_padding_modes_fall_back_to_the_plain_conv():
    strip = StripConv2D(3, 4, 3, padding=1, padding_mode="reflect")
    x = paddle.randn([1, 3, 11, 9])
    with set_conv_memory_budget(1), paddle.no_grad():
        reset()
        y = strip(x)
    assert strip_stats["strips"] == 0 and y.shape == [1, 4, 11, 9]


def test_budget_setting_context_and_environment(monkeypatch):
    before = conv_memory_budget()
    with set_conv_memory_budget(123):
        assert conv_memory_budget() == 123
    assert conv_memory_budget() == before
    with pytest.raises(ValueError):
        set_conv_memory_budget(-1)
    monkeypatch.setattr(strip_conv, "_budget_bytes", None)
    monkeypatch.setenv("PADDLESEG_EXT_CONV_BUDGET_MB", "2")
    assert conv_memory_budget() == 2 * 2 ** 20
    monkeypatch.setattr(strip_conv, "_budget_bytes", None)
    monkeypatch.setenv("PADDLESEG_EXT_CONV_BUDGET_MB", "lots")
    with pytest.raises(ValueError, match="MiB"):
        conv_memory_budget()
    monkeypatch.setattr(strip_conv, "_budget_bytes", None)
    monkeypatch.delenv("PADDLESEG_EXT_CONV_BUDGET_MB")
    assert conv_memory_budget() == 512 * 2 ** 20


@pytest.mark.parametrize("cls", [ConvBN, ConvBNReLU])
def test_conv_over_concat_equals_conv_of_concat(cls):
    paddle.seed(5)
    block = cls(10, 4, 3, dilation=2, bias=True)
    block.eval()
    parts = [paddle.randn([2, 3, 13, 11]), paddle.randn([2, 7, 13, 11])]
    with set_conv_memory_budget(1), paddle.no_grad():
        want = block(paddle.concat(parts, axis=1))
        reset()
        got = block.forward_concat(parts)
        assert strip_stats["tiled_calls"] == 2  # one per part, each in strips
    assert rel_err(got.numpy(), want.numpy()) <= tol.bound(1, 10 * 9)
    with pytest.raises(ValueError, match="channels"), paddle.no_grad():
        conv2d_over_concat(block._conv, parts[:1] + parts[:1])
    # With autograd on it is the concat itself (same values, same graph).
    np.testing.assert_array_equal(block.forward_concat(parts).numpy(),
                                  block(paddle.concat(parts, axis=1)).numpy())


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
    # Autograd on, or training-mode BN: the layer itself, input untouched.
    z = x.clone()
    np.testing.assert_array_equal(batch_norm_eval_(z, bn).numpy(), want)
    np.testing.assert_array_equal(z.numpy(), x.numpy())
    bn.train()  # (this updates the running statistics, so it comes last)
    with paddle.no_grad():
        z = x.clone()
        out = batch_norm_eval_(z, bn)
    assert out is not z
    np.testing.assert_array_equal(z.numpy(), x.numpy())


@pytest.mark.parametrize("cls", [ConvBN, ConvBNReLU])
def test_conv_bn_no_grad_equals_autograd_forward(cls):
    paddle.seed(9)
    block = cls(5, 6, 3, stride=2)
    block._batch_norm = _trained_looking_bn(6, 9)
    x = paddle.randn([2, 5, 21, 18])
    want = block(x).numpy()
    with paddle.no_grad():
        got = block(x).numpy()
    assert rel_err(got, want) <= tol.bound(1, 5 * 9, depth=2)


def test_backbone_inference_path_matches_and_keep_frees_stages():
    paddle.seed(6)
    bb = ResNet18_vd(output_stride=8)
    bb.eval()
    x = paddle.randn([1, 3, 45, 37])
    with_grad = [f.numpy() for f in bb(x)]
    with paddle.no_grad():
        without = [f.numpy() for f in bb(x)]
        kept = bb(x, keep=(3,))
    depth, fan_in = tol.network_shape(bb)
    for a, b in zip(with_grad, without):
        assert rel_err(b, a) <= tol.bound(1, fan_in, depth)
    assert kept[:3] == [None, None, None]
    np.testing.assert_array_equal(kept[3].numpy(), without[3])


def _small_psanet(impl="paddle"):
    paddle.seed(7)
    return PSANet(num_classes=5, backbone=ResNet18_vd(output_stride=8), mask_h=9, mask_w=11,
                  shrink_factor=2, psa_impl=impl)


def test_psanet_eval_tiles_and_matches():
    net = _small_psanet()
    net.eval()
    x = paddle.randn([1, 3, 97, 81])
    with paddle.no_grad():
        with set_conv_memory_budget(0):
            reset()
            want = net(x)[0].numpy()
            assert strip_stats["strips"] == 0
        with set_conv_memory_budget(4096):
            got = net(x)[0].numpy()
    # Every 3x3 conv (stem, blocks, head split over [x, ctx]) ran in strips.
    assert strip_stats["tiled_calls"] >= 20 and strip_stats["strips"] > 100
    bound = tol.network_bound(net, want, attention_fan_in=13 * 11)
    tol.assert_close(got, want, bound, "strips vs whole convs")
    tol.assert_argmax_agrees(got, want, bound)


def test_psanet_training_step_untouched():
    def step(budget):
        net = _small_psanet()
        net.train()
        x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 49, 41))
                             .astype("float32"))
        with set_conv_memory_budget(budget):
            reset()
            out = net(x)
            assert len(out) == 2  # main + aux
            sum(o.mean() for o in out).backward()
            assert strip_stats["strips"] == 0
        return [o.numpy() for o in out], {n: p.grad.numpy() for n, p in net.named_parameters()
                                          if p.grad is not None}

    (out0, g0), (out1, g1) = step(0), step(1)
    for a, b in zip(out0, out1):
        np.testing.assert_array_equal(a, b)
    assert g0.keys() == g1.keys() and len(g0) > 50
    for name in g0:
        np.testing.assert_array_equal(g0[name], g1[name], err_msg=name)


def test_export_keeps_plain_convs_and_matches_tiled_dygraph(tmp_path):
    from paddleseg_ext.core.export import export

    net = _small_psanet()
    net.eval()
    xs = [paddle.randn([1, 3, 77, 65]), paddle.randn([2, 3, 40, 56])]
    with set_conv_memory_budget(4096):
        reset()
        with paddle.no_grad():
            want = [net(x)[0].numpy() for x in xs]
        assert strip_stats["strips"] > 0
        reset()
        export(net, str(tmp_path / "exp"), [], output_op="none")
        assert strip_stats["strips"] == 0  # tracing is not eager: one conv op per layer
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
