"""Every registered rewrite on every registered model: the same function, keys and program.

For each (model, rewrite) pair where the rewrite converts something, the rewritten copy is
compared with the paper model: outputs in training and in eval, and every parameter's
gradient, within the model's rounding budget (tests/tolerance.py); the same ``state_dict``
keys (BatchNorm folding makes an inference-only copy whose batch norms are gone: there the
original's keys are checked untouched); and for the export targets a traced ``to_static``
program that equals the paper model. A deliberately broken rewrite fails each check.
"""

from __future__ import annotations

import copy

import numpy as np
import paddle
import pytest

import paddleseg_ext.models  # noqa: F401  (registers backbones)
from paddleseg_ext.cvlibs import manager
from paddleseg_ext.models.backbones import ResNet18_vd
from paddleseg_ext.models.layers.conv_bn import ConvBNReLU
from paddleseg_ext.runtime import ExecutionPolicy, prepare, registered_rewrites, to_form
from paddleseg_ext.runtime.rewrites import Rewrite
from model_checks import randomise_batch_norms
import tolerance as tol

SIZE = (2, 3, 40, 56)


MODELS = {
    "PSPNet": lambda: manager.MODELS.get("PSPNet")(
        3, backbone=ResNet18_vd(output_stride=8), pp_out_channels=64, dropout=0.0),
    "DANet": lambda: manager.MODELS.get("DANet")(
        3, backbone=ResNet18_vd(output_stride=8), dropout=0.0),
    "PSANet": lambda: manager.MODELS.get("PSANet")(
        3, backbone=ResNet18_vd(output_stride=8), mask_h=9, mask_w=13, dropout=0.0),
    "PointRend": lambda: manager.MODELS.get("PointRend")(
        3, backbone=ResNet18_vd(output_stride=32), fpn_channels=32, fpn_head_channels=16,
        point_channels=32, num_points=256, subdivision_num_points=10 ** 6,
        importance_sample_ratio=0.0),  # random training points: no top-k over rounding ties
}


def test_every_registered_model_is_covered():
    assert set(MODELS) == set(manager.MODELS.keys()), "add the new model to MODELS"


def _policy(rewrite: Rewrite, psa_impl: str = "paddle") -> ExecutionPolicy:
    target = next(t for t in ("train", "infer", "export", "onnx") if t in rewrite.targets)
    return ExecutionPolicy(target=target, psa_impl=psa_impl)


def _apply(model, rewrite: Rewrite, policy: ExecutionPolicy):
    net = copy.deepcopy(model)
    net.train() if policy.target == "train" else net.eval()
    n = rewrite.apply(net, policy)
    return net, n


def _tensors(outs):
    """Every float tensor of a model's outputs (PointRend's training points come as tuples)."""
    flat = []
    for o in outs:
        flat.extend(_tensors(o) if isinstance(o, (list, tuple)) else [o])
    return [o for o in flat if o.dtype in (paddle.float32, paddle.float64)]


def _run(net, x, train: bool):
    """Outputs and parameter gradients (train: of a fixed random loss on every output)."""
    net.train() if train else net.eval()
    paddle.seed(7)  # the same training points (PointRend) on both sides
    if not train:
        with paddle.no_grad():
            return [o.numpy() for o in _tensors(net(x))], {}
    outs = _tensors(net(x))
    loss = sum((o * paddle.linspace(-1.0, 1.0, o.numel()).reshape(o.shape)).mean() for o in outs)
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in net.named_parameters() if p.grad is not None}
    net.clear_gradients()
    return [o.numpy() for o in outs], grads


def check_rewrite(model, rewrite: Rewrite, x: paddle.Tensor, policy: ExecutionPolicy) -> int:
    """Assert ``rewrite`` keeps ``model``'s function, gradients, keys and traced program.

    Returns how many layers it converted (0: nothing to check).
    """
    keys = list(model.state_dict())
    net, n = _apply(model, rewrite, policy)
    if not n:
        return 0
    att = ((x.shape[2] + 7) // 8) * ((x.shape[3] + 7) // 8)
    positions = x.shape[0] * x.shape[2] * x.shape[3]
    if rewrite.name == "fold_bn":  # an inference-only copy: the original keeps its keys
        assert list(model.state_dict()) == keys
    else:
        assert list(net.state_dict()) == keys, f"{rewrite.name} changed the state_dict keys"
    modes = [False] + ([True] if policy.target == "train" else [])
    for train in modes:
        ref, ref_g = _run(model, x, train)
        got, got_g = _run(net, x, train)
        assert len(got) == len(ref)
        for i, (g, r) in enumerate(zip(got, ref)):
            tol.assert_close(g, r, tol.network_bound(model, r, attention_fan_in=att),
                             f"{rewrite.name} output {i} ({'train' if train else 'eval'})")
        assert got_g.keys() == ref_g.keys(), f"{rewrite.name}: other parameters get gradients"
        # Some gradients are zero up to rounding (a key bias under a softmax): the model's
        # largest gradient sets the scale.
        g_scale = max((float(np.abs(g).max()) for g in ref_g.values()), default=0.0)
        for name in ref_g:
            tol.assert_close(got_g[name], ref_g[name],
                             tol.network_gradient_bound(model, ref_g[name], positions,
                                                        winograd=True, attention_fan_in=att,
                                                        scale=g_scale),
                             f"{rewrite.name} gradient of {name}")
    if policy.target in ("export", "onnx"):
        spec = [paddle.static.InputSpec([None, x.shape[1], None, None], "float32", "x")]
        traced = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
        ref, _ = _run(model, x, False)
        with paddle.no_grad():
            got = traced(x)
        got = got if isinstance(got, (list, tuple)) else [got]
        for g, r in zip(got, ref):
            tol.assert_close(g.numpy(), r, tol.network_bound(model, r, attention_fan_in=att),
                             f"{rewrite.name} traced program")
    return n


@pytest.fixture(scope="module")
def models():
    built = {}
    for name, make in MODELS.items():
        paddle.seed(1)
        built[name] = randomise_batch_norms(make(), scales=True)
    return built


REWRITES = {r.name: r for r in registered_rewrites()}


@pytest.mark.parametrize("rewrite_name", list(REWRITES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_rewrite_keeps_the_function(models, model_name, rewrite_name):
    rewrite = REWRITES[rewrite_name]
    x = paddle.to_tensor(np.random.default_rng(3).standard_normal(SIZE).astype("float32"))
    n = check_rewrite(models[model_name], rewrite, x, _policy(rewrite))
    if n == 0:
        pytest.skip(f"{rewrite_name} converts nothing in {model_name}")


# The backbone's functional variants (mmsegmentation's ResNetV1c: strided 1x1 shortcuts,
# identity shortcuts, contracted dilation, undilated second basic conv) under every rewrite.
VARIANTS = {
    "PSPNet/ResNetV1c": lambda: manager.MODELS.get("PSPNet")(
        3, backbone=ResNet18_vd(output_stride=8, shortcut="strided_conv", identity_shortcut=True,
                                contract_dilation=True, dilate_basic_second_conv=False),
        pp_out_channels=64, dropout=0.0),
}


@pytest.mark.parametrize("rewrite_name", list(REWRITES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rewrite_keeps_the_function_of_backbone_variants(variant, rewrite_name):
    rewrite = REWRITES[rewrite_name]
    paddle.seed(1)
    model = randomise_batch_norms(VARIANTS[variant](), scales=True)
    x = paddle.to_tensor(np.random.default_rng(3).standard_normal(SIZE).astype("float32"))
    if check_rewrite(model, rewrite, x, _policy(rewrite)) == 0:
        pytest.skip(f"{rewrite_name} converts nothing in {variant}")


@pytest.fixture(scope="module")
def psa_ops():
    from paddleseg_ext.ops import is_attention_op_available, is_compiled_op_available

    if not (is_compiled_op_available(build=True) and is_attention_op_available(build=True)):
        pytest.skip("the compiled PSA ops cannot be built on this machine")


@pytest.mark.parametrize("psa_impl", ["op", "fused"])
@pytest.mark.parametrize("target", ["train", "export"])
def test_psa_rewrite_with_the_compiled_ops(models, psa_ops, psa_impl, target):
    x = paddle.to_tensor(np.random.default_rng(4).standard_normal(SIZE).astype("float32"))
    policy = ExecutionPolicy(target=target, psa_impl=psa_impl, fused_min_positions=0)
    assert check_rewrite(models["PSANet"], REWRITES["psa"], x, policy) == 1


def test_prepare_applies_each_target_and_undoes_forms(models):
    net = models["PSPNet"]
    train = prepare(copy.deepcopy(net), ExecutionPolicy(target="train"))
    assert [r.split(":")[0] for r in train.applied_rewrites] == ["ppm_split", "conv"]
    again = prepare(train, ExecutionPolicy(target="export"))  # forms undone first
    assert again.applied_rewrites == [] and again is not train
    assert all(getattr(type(m), "plain_class", None) is None for m in again.sublayers())
    assert train.training and not again.training


# --------------------------------------------------------------------------
# The checks fail on a broken rewrite
# --------------------------------------------------------------------------

class _ScaledConvBNReLU(ConvBNReLU):
    """A wrong form: 1 % more output (a slip in a folded scale, say)."""

    plain_class = ConvBNReLU

    def forward(self, x):
        return super().forward(x) * 1.01


class _DetachedConvBNReLU(ConvBNReLU):
    """A wrong form: the right values, but no gradient reaches the conv weight."""

    plain_class = ConvBNReLU

    def forward(self, x):
        return self.after_conv(paddle.nn.functional.conv2d(
            x, self._conv.weight.detach(), None, self._conv._stride, self._conv._padding,
            self._conv._dilation, self._conv._groups))


def _broken(form, rename=False):
    def apply(model, policy):
        layer = model.head.conv_bn_relu if hasattr(model, "head") else model.bottleneck
        to_form(layer, form)
        if rename:  # a form that registers its weight under a new name
            layer.add_parameter("weight2", layer._conv._parameters.pop("weight"))
        return 1
    return Rewrite("broken", ("train",), apply, lambda policy: True, "broken on purpose")


@pytest.mark.parametrize("form, rename, match", [
    (_ScaledConvBNReLU, False, "rounding budget"),
    (_DetachedConvBNReLU, False, "other parameters get gradients"),
    (ConvBNReLU.__mro__[0], True, "changed the state_dict keys"),
])
def test_a_broken_rewrite_fails_the_check(models, form, rename, match):
    if form is ConvBNReLU:
        form = type("_Same", (ConvBNReLU,), {"plain_class": ConvBNReLU})
    x = paddle.to_tensor(np.random.default_rng(5).standard_normal(SIZE).astype("float32"))
    with pytest.raises(AssertionError, match=match):
        check_rewrite(models["PSANet"], _broken(form, rename), x, ExecutionPolicy(target="train"))
