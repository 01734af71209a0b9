"""Exactness of the split and stacked convolution forms (``ppm_split``, ``danet_stacked``).

PSPNet's pyramid-pooling bottleneck split over its inputs (``conv_of_upsampled`` for the
pooled branches) and DANet's ``pam_in`` / ``cam_in`` as one stacked convolution must compute
what the paper layers compute, within the rounding budget, in training (outputs and every
gradient), in eval and under no-grad, with BatchNorm folded; exported programs keep the paper
form. PAM and CAM are checked against the paper's equations.
"""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.models.danet import DAHead, DANet
from paddleseg_ext.models.layers import PPModule
from paddleseg_ext.models.layers.attention import PAM
from paddleseg_ext.runtime.forms.resized_conv import bilinear_matrix, conv_of_upsampled
from paddleseg_ext.models.pspnet import PSPNet
from paddleseg_ext.runtime import ExecutionPolicy, prepare
from paddleseg_ext.runtime.forms.danet import StackedDAHead
from paddleseg_ext.runtime.forms.ppm import SplitPPModule
import tolerance as tol


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def _budget(layer, attention_fan_in: int = 0, positions: int = 0, backward: bool = False) -> float:
    """The relative rounding budget of ``layer`` (tests/tolerance.py); Winograd may run on
    either side. ``positions`` (batch x pixels) bounds a weight gradient's sum."""
    depth, fan_in = tol.network_shape(layer, attention_fan_in)
    return tol.bound(1, max(fan_in, positions), depth * (2 if backward else 1), winograd=True)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("out_size,in_size",
                         [(64, 6), (7, 3), (5, 5), (1, 4), (4, 6), (9, 1), (13, 2)])
def test_bilinear_matrix_is_paddles_bilinear_resize(out_size, in_size, align_corners):
    v = np.random.RandomState(out_size * 31 + in_size).randn(2, in_size, 3).astype(np.float32)
    x = paddle.to_tensor(v.transpose(0, 2, 1)[:, :, :, None])  # [2, 3, in, 1]
    ref = F.interpolate(x, size=[out_size, 1], mode="bilinear", align_corners=align_corners)
    got = np.einsum("oi,nci->nco", bilinear_matrix(out_size, in_size, align_corners),
                    v.transpose(0, 2, 1))
    np.testing.assert_allclose(got, ref.numpy()[..., 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size,bins,kernel,dilation,align_corners", [
    ((64, 40), (1, 2, 3, 6), 3, 1, False),
    ((5, 7), (1, 2, 3, 6), 3, 1, False),  # bin 6 larger than the map side
    ((9, 4), (1, 2, 3, 6), 3, 1, True),
    ((6, 6), (6,), 3, 2, False),  # bin equal to the map: resize is the identity
    ((8, 3), (2, 3), 1, 1, False),
    ((17, 1), (2,), 3, 1, True),
    ((4, 4), (3,), 5, 1, False),
])
def test_conv_of_upsampled_equals_conv_of_the_resized_maps(size, bins, kernel, dilation,
                                                            align_corners):
    rng = np.random.RandomState(sum(size) + kernel)
    maps = [paddle.to_tensor(rng.randn(2, 4, b, b).astype(np.float32)) for b in bins]
    weights = [paddle.to_tensor(rng.randn(5, 4, kernel, kernel).astype(np.float32))
               for _ in bins]
    pad = dilation * (kernel // 2)
    ref = sum(F.conv2d(F.interpolate(m, size=list(size), mode="bilinear",
                                     align_corners=align_corners), w, padding=pad,
                       dilation=dilation) for m, w in zip(maps, weights))
    got = conv_of_upsampled(maps, weights, size, align_corners, padding=(pad, pad),
                            dilation=(dilation, dilation))
    assert got.shape == [2, 5, size[0], size[1]]
    # One conv per map summed (len(bins) * 4 * k * k terms) after a bilinear resize.
    assert _rel(ref.numpy(), got.numpy()) < tol.bound(1, len(bins) * 4 * kernel * kernel, depth=2)


def test_conv_of_upsampled_rejects_mismatched_arguments():
    m = paddle.zeros([1, 4, 2, 2])
    with pytest.raises(ValueError, match="one weight per map"):
        conv_of_upsampled([m], [], (8, 8))
    with pytest.raises(ValueError, match="does not match map"):
        conv_of_upsampled([m], [paddle.zeros([5, 3, 3, 3])], (8, 8))
    with pytest.raises(ValueError, match="must keep the size"):
        conv_of_upsampled([m], [paddle.zeros([5, 4, 3, 3])], (8, 8), padding=(0, 0))
    with pytest.raises(ValueError, match="positive int"):
        bilinear_matrix(0, 3)


def _randomise_bn(layer: paddle.nn.Layer, seed: int) -> None:
    rng = np.random.RandomState(seed)
    for sub in layer.sublayers():
        if isinstance(sub, paddle.nn.BatchNorm2D):
            n = int(sub._mean.shape[0])
            sub._mean.set_value(rng.randn(n).astype(np.float32) * 0.1)
            sub._variance.set_value(rng.uniform(0.5, 2.0, n).astype(np.float32))
            sub.weight.set_value(rng.uniform(0.5, 1.5, n).astype(np.float32))
            sub.bias.set_value(rng.randn(n).astype(np.float32) * 0.1)


def _outputs_and_grads(layer, x, forward, train: bool, grad: bool):
    layer.train() if train else layer.eval()
    paddle.seed(7)  # the same dropout masks in both forms
    if not grad:
        with paddle.no_grad():
            out = forward(layer, x)
        return [o.numpy() for o in out], {}
    xx = x.clone()
    xx.stop_gradient = False
    out = forward(layer, xx)
    loss = sum((o * paddle.linspace(-1.0, 1.0, o.numel()).reshape(o.shape)).sum() for o in out)
    loss.backward()
    named = dict(layer.named_parameters())
    trained = [n for n in named if not n.endswith(("._mean", "._variance"))]
    if train:  # every trainable parameter takes part (eval skips training-only classifiers)
        missing = [n for n in trained if named[n].grad is None]
        assert not missing, f"no gradient for {missing}"
    grads = {n: named[n].grad.numpy() for n in trained if named[n].grad is not None}
    grads["input"] = xx.grad.numpy()
    layer.clear_gradients()
    return [o.numpy() for o in out], grads


def _assert_same_grads(ref: dict, got: dict, budget: float) -> None:
    # Relative to the largest gradient: some are 0 up to rounding (a key bias under a softmax).
    assert set(ref) == set(got)
    if not ref:
        return
    scale = max(float(np.abs(g).max()) for g in ref.values())
    for name in ref:
        tol.assert_close(got[name], ref[name], budget * scale, name)


def _form(layer, target, **policy):
    """``layer`` in the forms of ``target`` (a copy; BN folding and Winograd off unless asked)."""
    policy.setdefault("fold_bn", False)
    policy.setdefault("winograd", False)
    return prepare(layer, ExecutionPolicy(target=target, **policy), copy_model=True)


def _call(layer, x):
    out = layer(x)
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("train,grad", [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("size,align_corners", [((9, 13), False), ((4, 4), True), ((12, 8), False)])
def test_ppm_split_bottleneck_equals_the_concatenating_form(size, align_corners, train, grad):
    paddle.seed(0)
    ppm = PPModule(16, 8, (1, 2, 3, 6), align_corners=align_corners)
    _randomise_bn(ppm, 1)
    split = _form(ppm, "train" if grad else "infer")
    assert isinstance(split, SplitPPModule) and split.weight_for_backward == grad
    x = paddle.randn([2, 16, *size])
    ref, ref_g = _outputs_and_grads(ppm, x, _call, train, grad)
    got, got_g = _outputs_and_grads(split, x, _call, train, grad)
    assert _rel(ref[0], got[0]) < _budget(ppm)
    _assert_same_grads(ref_g, got_g, _budget(ppm, positions=2 * size[0] * size[1], backward=True))


def test_ppm_weight_is_split_once_for_backward_and_viewed_without(monkeypatch):
    """Five slices of the bottleneck weight would each zero-fill a whole-weight gradient
    in backward (17.6 % of a PSPNet-R50 step); one split has one concat. Without a
    backward, slices are free views and a split would copy the weight."""
    ppm = PPModule(16, 8, (1, 2, 3, 6))
    x = paddle.randn([1, 16, 7, 7])
    calls, real_split = [], paddle.split

    def split(t, *args, **kw):
        calls.append(list(t.shape))
        return real_split(t, *args, **kw)

    monkeypatch.setattr(paddle, "split", split)
    weight_shape = list(ppm.bottleneck._conv.weight.shape)
    _form(ppm, "train")(x).sum().backward()
    assert calls.count(weight_shape) == 1
    calls.clear()
    with paddle.no_grad():
        _form(ppm, "infer")(x)
    assert weight_shape not in calls


def test_exported_ppm_keeps_the_concatenating_form():
    ppm = PPModule(8, 4, (1, 2))
    ppm.eval()
    x = paddle.randn([1, 8, 6, 5])
    traced_model = _form(ppm, "export")
    assert type(traced_model) is PPModule
    spec = [paddle.static.InputSpec([None, 8, None, None], "float32")]
    traced = paddle.jit.to_static(traced_model, input_spec=spec, full_graph=True)
    with paddle.no_grad():
        eager = _form(ppm, "infer")(x)
    assert _rel(traced(x).numpy(), eager.numpy()) < _budget(ppm)


def test_pspnet_folded_split_logits_equal_plain_and_concatenating():
    paddle.seed(0)
    net = PSPNet(3, backbone=ResNet18_vd(output_stride=8), bin_sizes=(1, 2, 3, 6),
                 pp_out_channels=32)
    _randomise_bn(net, 2)
    net.eval()
    x = paddle.randn([1, 3, 40, 56])
    with paddle.no_grad():
        ref = net(x)[0].numpy()
        split = _form(net, "infer")
        assert isinstance(split.psp_module, SplitPPModule)
        split_logits = split(x)[0].numpy()
        folded = _form(net, "infer", fold_bn=True, winograd=True)
        assert "fold_bn: 29" in folded.applied_rewrites
        folded_split = folded(x)[0].numpy()
    budget = _budget(net)
    assert _rel(ref, split_logits) < budget
    assert _rel(ref, folded_split) < budget
    tol.assert_argmax_agrees(folded_split, ref, budget * np.abs(ref).max())


@pytest.mark.parametrize("train,grad", [(True, True), (False, True), (False, False)])
def test_dahead_stacked_input_convs_equal_two_convs(train, grad):
    paddle.seed(0)
    head = DAHead(32, 3, inter_channels=8)
    _randomise_bn(head, 3)
    for p in (head.pam.gamma, head.cam.beta):  # make both attentions count
        p.set_value(paddle.to_tensor([0.7]))
    stacked = _form(head, "train" if grad else "infer")
    assert isinstance(stacked, StackedDAHead)
    x = paddle.randn([2, 32, 7, 9])
    ref, ref_g = _outputs_and_grads(head, x, _call, train, grad)
    got, got_g = _outputs_and_grads(stacked, x, _call, train, grad)
    assert len(ref) == len(got) == (3 if train else 1)
    for a, b in zip(ref, got):
        assert _rel(a, b) < _budget(head, attention_fan_in=7 * 9)
    _assert_same_grads(ref_g, got_g, _budget(head, 7 * 9, positions=2 * 7 * 9, backward=True))


def test_danet_folded_stacked_head_and_traced_program_agree():
    paddle.seed(0)
    net = DANet(3, backbone=ResNet18_vd(output_stride=8))
    _randomise_bn(net, 4)
    net.head.pam.gamma.set_value(paddle.to_tensor([0.5]))
    net.head.cam.beta.set_value(paddle.to_tensor([0.5]))
    net.eval()
    x = paddle.randn([1, 3, 32, 48])
    with paddle.no_grad():
        plain_logits = net(x)[0].numpy()
        folded = _form(net, "infer", fold_bn=True, winograd=True)
        assert isinstance(folded.head, StackedDAHead)
        folded_logits = folded(x)[0].numpy()
    budget = _budget(net, attention_fan_in=4 * 6)
    assert _rel(plain_logits, folded_logits) < budget
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32")]
    traced = paddle.jit.to_static(_form(net, "export"), input_spec=spec, full_graph=True)
    assert _rel(plain_logits, traced(x)[0].numpy()) < budget


def test_pam_equals_the_paper_equation():
    paddle.seed(0)
    pam = PAM(16, reduction=4)
    pam.gamma.set_value(paddle.to_tensor([0.8]))
    x = paddle.randn([2, 16, 5, 6])
    with paddle.no_grad():
        got = pam(x).numpy()
        q = pam.query_conv(x).numpy().reshape(2, 4, 30)
        k = pam.key_conv(x).numpy().reshape(2, 4, 30)
        v = pam.value_conv(x).numpy().reshape(2, 16, 30)
    e = np.einsum("ncj,nci->nji", q, k)
    s = np.exp(e - e.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    ref = 0.8 * np.einsum("nci,nji->ncj", v, s).reshape(2, 16, 5, 6) + x.numpy()
    assert _rel(ref, got) < _budget(pam, attention_fan_in=30)


def test_cam_equals_the_authors_max_shifted_softmax_with_gradients():
    from paddleseg_ext.models.layers.attention import CAM

    cam = CAM()
    cam.beta.set_value(paddle.to_tensor([0.6]))
    rng = np.random.RandomState(5)
    x_np = rng.randn(2, 6, 4, 5).astype(np.float32) * 3
    upstream = paddle.to_tensor(rng.randn(2, 6, 4, 5).astype(np.float32))
    x = paddle.to_tensor(x_np, stop_gradient=False)
    out = cam(x)
    (out * upstream).sum().backward()
    ref_x = paddle.to_tensor(x_np, stop_gradient=False)
    feats = ref_x.flatten(2)
    energy = paddle.bmm(feats, feats.transpose([0, 2, 1]))
    attn = F.softmax(paddle.max(energy, axis=-1, keepdim=True) - energy, axis=-1)
    ref = 0.6 * paddle.bmm(attn, feats).reshape(ref_x.shape) + ref_x
    (ref * upstream).sum().backward()
    # Energy sums 20 positions, the output 6 channels; backward runs both again. The softmax
    # turns the energies' absolute rounding into relative weight errors: scale by max |E|.
    e_scale = max(1.0, float(np.abs(energy.numpy()).max()))
    assert _rel(ref.numpy(), out.numpy()) < tol.bound(e_scale, 20, depth=2)
    assert _rel(ref_x.grad.numpy(), x.grad.numpy()) < tol.bound(e_scale, 20, depth=4)
