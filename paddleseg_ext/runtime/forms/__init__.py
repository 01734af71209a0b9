"""The package's rewrites, in the order :func:`paddleseg_ext.runtime.prepare` applies them.

Each converts the paper layers it knows into one of the forms of this package (same
parameters and keys, same function up to float rounding) for the targets it declares.

=================  ===================  ====================================================
rewrite            targets              what
=================  ===================  ====================================================
fold_bn            infer                BatchNorm folded into the convolution before it
psa                all                  PSANet's attention implementation (policy.psa_impl)
psanet_inference   infer                PSANet keeps one backbone stage, no [x, ctx] concat
ppm_split          train, infer         PSPNet's fusing convolution split over its inputs
danet_stacked      train, infer         DANet's two branch-input convolutions as one
conv               train, infer         Winograd 3x3 (CPU) and row strips (infer)
inplace            infer                batch norm, shortcut and ReLU in the conv's buffer
onnx_pool          onnx                 adaptive average pooling as matmuls
=================  ===================  ====================================================
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import paddle.nn as nn

from ...models.backbones.resnet_vd import ResidualBlock
from ...models.danet import DAHead
from ...models.layers.conv_bn import ConvBN, ConvBNReLU
from ...models.layers.psa_block import PSAModule
from ...models.layers.pyramid_pooling import PPModule
from ...models.psanet import PSANet
from ...utils.logger import get_logger
from ..policy import ExecutionPolicy
from ..rewrites import register_rewrite, to_form
from .conv import FastConv2D, explicit_padding, winograd_eligible
from .danet import StackedDAHead, stacking_applies
from .fold_bn import fold_batch_norms_
from .inplace import InPlaceConvBN, InPlaceConvBNReLU, InPlaceResidualBlock
from .onnx import MatmulAdaptiveAvgPool2D, matmul_pool_size
from .ppm import SplitPPModule, split_applies
from .psa import (FusedPSAModule, InferencePSANet, MaskedPSAModule, op_attention, op_mask,
                  paddle_attention, paddle_mask)

_warned = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _op_ready(kind: str, policy: ExecutionPolicy) -> bool:
    """Whether compiled op ``kind`` is loaded, building it now (a tool's start) if allowed."""
    from ... import ops

    check = {"psa_mask": ops.is_compiled_op_available,
             "psa_attention": ops.is_attention_op_available,
             "winograd": ops.is_winograd_available}[kind]
    if check(build=False):
        return True
    if policy.build_ops:
        get_logger().info("building the compiled op %s (once per user; "
                          "`python -m paddleseg_ext.ops.build` does it ahead of time)", kind)
        return check(build=True)
    return False


def _winograd(policy: ExecutionPolicy) -> bool:
    if not policy.winograd:
        return False
    if _op_ready("winograd", policy):
        return True
    _warn_once("the compiled Winograd op is unavailable (build it with `python -m "
               "paddleseg_ext.ops.build`); 3x3 convolutions run as conv2d")
    return False


def _budget(policy: ExecutionPolicy) -> int:
    return policy.conv_budget_bytes if policy.target == "infer" else 0


@register_rewrite("fold_bn", ("infer",), "BatchNorm folded into the convolution before it",
                  enabled=lambda policy: policy.fold_bn)
def _fold_bn(model: nn.Layer, policy: ExecutionPolicy) -> int:
    return fold_batch_norms_(model)[0]


def _psa_impl(policy: ExecutionPolicy) -> str:
    """``op`` | ``paddle`` | ``fused`` for this run; ``auto`` takes the compiled mask if built."""
    impl = policy.psa_impl
    if impl == "auto":
        if _op_ready("psa_mask", policy):
            return "op"
        _warn_once("PSANet: psa_impl=auto found no compiled psa_mask op (build it with `python -m "
                   "paddleseg_ext.ops.build`); using the pure-Paddle PSA mask")
        return "paddle"
    if impl == "op" and not _op_ready("psa_mask", policy):
        raise RuntimeError("psa_impl=op: the compiled psa_mask op is not built and building is "
                           "off; run `python -m paddleseg_ext.ops.build` or use psa_impl=paddle")
    return impl


def _raw_op(kind: str):
    from ... import ops

    if kind == "psa_mask":
        return ops.load_op_library(build=False)[0].psa_mask
    return ops.load_attention_op_library(build=False)[0].psa_attention


@register_rewrite("psa", ("train", "infer", "export", "onnx"),
                  "PSANet's attention with the implementation the policy names")
def _psa(model: nn.Layer, policy: ExecutionPolicy) -> int:
    layers = [m for m in model.sublayers(include_self=True) if type(m) is PSAModule]
    if not layers:
        return 0
    impl = "paddle" if policy.target == "onnx" else _psa_impl(policy)
    traced = policy.target in ("export", "onnx")
    for layer in layers:
        if layer.compact:  # absolute-position attention: no mask op at all
            to_form(layer, MaskedPSAModule, mask_fn=paddle_mask, custom_ops=())
        elif impl == "fused" and _op_ready("psa_attention", policy):
            if traced:
                to_form(layer, FusedPSAModule, fused_fn=_raw_op("psa_attention"),
                        mask_fn=paddle_mask, min_positions=0, custom_ops=("psa_attention",))
            else:
                mask_ok = _op_ready("psa_mask", policy)
                to_form(layer, FusedPSAModule, fused_fn=op_attention,
                        mask_fn=op_mask if mask_ok else paddle_mask,
                        min_positions=policy.fused_min_positions,
                        custom_ops=("psa_attention",))
        elif impl == "fused" and not traced:
            _warn_once("PSANet: psa_impl=fused found no compiled psa_attention op; using its "
                       "chunked pure-Paddle form")
            to_form(layer, FusedPSAModule, fused_fn=paddle_attention, mask_fn=paddle_mask,
                    min_positions=0, custom_ops=())
        elif impl == "op":
            to_form(layer, MaskedPSAModule, mask_fn=_raw_op("psa_mask") if traced else op_mask,
                    custom_ops=("psa_mask",))
        else:
            to_form(layer, MaskedPSAModule, mask_fn=paddle_mask, custom_ops=())
    return len(layers)


@register_rewrite("psanet_inference", ("infer",),
                  "PSANet keeps one backbone stage and convolves [x, ctx] without the concat")
def _psanet_inference(model: nn.Layer, policy: ExecutionPolicy) -> int:
    nets = [m for m in model.sublayers(include_self=True) if type(m) is PSANet]
    for net in nets:
        keeps = "keep" in inspect.signature(net.backbone.forward).parameters
        to_form(net, InferencePSANet, keep_stages=keeps, budget_bytes=_budget(policy),
                winograd=_winograd(policy))
    return len(nets)


@register_rewrite("ppm_split", ("train", "infer"),
                  "PSPNet's fusing convolution split over its inputs, branches at pooled size")
def _ppm_split(model: nn.Layer, policy: ExecutionPolicy) -> int:
    return _to_conv_form(model, policy, PPModule, split_applies, SplitPPModule,
                         weight_for_backward=policy.target == "train")


@register_rewrite("danet_stacked", ("train", "infer"),
                  "DANet's two branch-input convolutions as one stacked convolution")
def _danet_stacked(model: nn.Layer, policy: ExecutionPolicy) -> int:
    return _to_conv_form(model, policy, DAHead, stacking_applies, StackedDAHead)


def _to_conv_form(model: nn.Layer, policy: ExecutionPolicy, plain: type,
                  applies: Callable[[nn.Layer], bool], form: type,
                  **attributes: Any) -> int:
    """Swap every ``plain`` layer that ``applies`` accepts to ``form`` (which convolves by the policy)."""
    layers = [m for m in model.sublayers(include_self=True) if type(m) is plain and applies(m)]
    for layer in layers:
        to_form(layer, form, budget_bytes=_budget(policy), winograd=_winograd(policy), **attributes)
    return len(layers)


@register_rewrite("conv", ("train", "infer"),
                  "Winograd F(2x2, 3x3) for CPU 3x3 convolutions; row strips in inference")
def _conv(model: nn.Layer, policy: ExecutionPolicy) -> int:
    winograd, budget = _winograd(policy), _budget(policy)
    n = 0
    for layer in model.sublayers(include_self=True):
        if type(layer) is not nn.Conv2D:
            continue
        pad = explicit_padding(layer)
        if pad is None:
            continue
        fast = winograd and winograd_eligible(layer.weight.shape, layer._stride, pad,
                                              layer._dilation, layer._groups)
        if fast or budget:
            to_form(layer, FastConv2D, winograd=fast, budget_bytes=budget, pad4=pad)
            n += 1
    return n


@register_rewrite("inplace", ("infer",), "batch norm and ReLU in the convolution's own buffer")
def _inplace(model: nn.Layer, policy: ExecutionPolicy) -> int:
    forms = {ConvBNReLU: InPlaceConvBNReLU, ConvBN: InPlaceConvBN, ResidualBlock: InPlaceResidualBlock}
    layers = [m for m in model.sublayers(include_self=True) if type(m) in forms]
    for layer in layers:
        to_form(layer, forms[type(layer)])
    return len(layers)


@register_rewrite("onnx_pool", ("onnx",), "adaptive average pooling as two matmuls")
def _onnx_pool(model: nn.Layer, policy: ExecutionPolicy) -> int:
    n = 0
    for layer in model.sublayers(include_self=True):
        if type(layer) is nn.AdaptiveAvgPool2D:
            bins = matmul_pool_size(layer)
            if bins is not None:
                to_form(layer, MatmulAdaptiveAvgPool2D, bins=bins)
                n += 1
    return n
