"""PaddleSeg 2.x whole-model checkpoints: PSPNet, DANet, PointRend.

PaddleSeg saves ``paddle.save(model.state_dict())`` of its own classes; the
backbones (``backbone.*``, ResNet*_vd) already use this toolkit's key names,
the heads do not. Each model has one function that maps PaddleSeg's head
keys onto ours; every conv bias PaddleSeg puts before a BatchNorm is folded
into that BN's running mean (exact, see :func:`~.base.fold_bias_into_bn`).
What a rule does not place stays in ``Conversion.unplaced`` and makes the
loader refuse the file.

The layouts were read from PaddleSeg 2.8.0 (``paddleseg/models/pspnet.py``,
``danet.py``, ``pointrend.py``) and are proven exact against PaddleSeg's own
models in the benchmark environment (``tests/test_peer_checkpoints.py``);
their key/shape lists are kept in ``tests/fixtures/paddleseg/``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from .base import Conversion, fold_bias_into_bn, model_is, register_adapter, rename_prefix

State = Dict[str, np.ndarray]


def _has_prefix(keys: Sequence[str], *prefixes: str) -> bool:
    return all(any(k.startswith(p) for k in keys) for p in prefixes)


def _conv_bn(src: State, out: State, peer: str, ours: str, folded: List[str]) -> int:
    """PaddleSeg ``ConvBNReLU`` at ``peer`` (conv with bias) -> ours at ``ours`` (no bias).

    Returns the number of tensors moved; the conv bias is folded into the BN.
    """
    bias = f"{peer}._conv.bias"
    moved = rename_prefix(src, out, f"{peer}.", f"{ours}.")
    if f"{ours}._conv.bias" in out and f"{ours}._batch_norm._mean" in out:
        fold_bias_into_bn(out, f"{ours}._conv.bias", f"{ours}._batch_norm")
        folded.append(bias)
    return moved


def _finish(layout: str, src: State, out: State, moved: int, folded: List[str],
            hint: str, unused: Sequence[str] = ()) -> Conversion:
    rename_prefix(src, out, "backbone.", "backbone.")  # same names: not counted as renamed
    left_out = [k for k in unused if src.pop(k, None) is not None]
    return Conversion(layout=layout, state=out, renamed=moved, folded=folded,
                      unplaced=sorted(src), hint=hint, unused=left_out)


def _recipe_hint(model: str, folder: str) -> str:
    return (f"Build the {model} from the PaddleSeg recipe the checkpoint was trained with, same "
            f"backbone and num_classes (configs/{folder}/paddleseg/, model zoo in "
            f"configs/{folder}/README.md)")


# --------------------------------------------------------------------- PSPNet
PSPNET = "PaddleSeg 2.x PSPNet"


def _detect_pspnet(keys: Sequence[str], model: object) -> bool:
    return _has_prefix(keys, "head.psp_module.")


def _reverse_branch_order(weight: np.ndarray, in_channels: int, n_bins: int) -> np.ndarray:
    """PaddleSeg's PPM concatenates ``[x, bin_n, ..., bin_1]``, ours ``[x, bin_1, ..., bin_n]``:
    reorder the bottleneck conv's input-channel blocks (a pure permutation)."""
    branch = (weight.shape[1] - in_channels) // n_bins
    blocks = [weight[:, :in_channels]]
    blocks += [weight[:, in_channels + (n_bins - 1 - j) * branch:in_channels + (n_bins - j) * branch]
               for j in range(n_bins)]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1))


def _convert_pspnet(state: State, model: object) -> Conversion:
    src, out, folded = dict(state), {}, []
    moved = 0
    n_bins = len({k.split(".")[3] for k in src if k.startswith("head.psp_module.stages.")})
    for i in range(n_bins):
        moved += _conv_bn(src, out, f"head.psp_module.stages.{i}.1", f"psp_module.stages.{i}.1", folded)
    moved += _conv_bn(src, out, "head.psp_module.conv_bn_relu2", "psp_module.bottleneck", folded)
    first = out.get("psp_module.stages.0.1._conv.weight")
    key = "psp_module.bottleneck._conv.weight"
    if first is not None and key in out:
        out[key] = _reverse_branch_order(out[key], first.shape[1], n_bins)
    moved += rename_prefix(src, out, "head.conv.", "cls.")
    moved += _conv_bn(src, out, "head.auxlayer.conv_bn_relu", "aux_head.conv_bn_relu", folded)
    moved += rename_prefix(src, out, "head.auxlayer.conv.", "aux_head.conv.")
    return _finish(PSPNET, src, out, moved, folded, _recipe_hint("PSPNet", "pspnet"))


# ---------------------------------------------------------------------- DANet
DANET = "PaddleSeg 2.x DANet"
_DANET_HINT = ("A PaddleSeg DANet needs DANet(aux_head='linear', align_mode=1), the defaults. "
               + _recipe_hint("DANet", "danet"))


def _detect_danet(keys: Sequence[str], model: object) -> bool:
    return _has_prefix(keys, "head.position_conv.", "head.channel_conv.")


def _convert_danet(state: State, model: object) -> Conversion:
    if model_is(model, "DANet") and getattr(model, "align_mode", 1) != 1:
        raise ValueError(f"detected a {DANET} checkpoint, but this DANet resizes its logits with "
                         f"align_mode={model.align_mode}, a different function. {_DANET_HINT}")
    src, out, folded = dict(state), {}, []
    moved = 0
    for peer, ours in (("position_conv", "pam_in"), ("conv2", "pam_out"),
                       ("channel_conv", "cam_in"), ("conv1", "cam_out")):
        moved += _conv_bn(src, out, f"head.{peer}", f"head.{ours}", folded)
    moved += rename_prefix(src, out, "head.pam.", "head.pam.")
    moved += rename_prefix(src, out, "head.cam.gamma", "head.cam.beta")
    for peer, ours in (("cls_head", "head.fused_cls"), ("aux_head_pam", "head.pam_cls"),
                       ("aux_head_cam", "head.cam_cls"), ("aux_head", "aux_head")):
        moved += rename_prefix(src, out, f"head.{peer}.", f"{ours}.")
    return _finish(DANET, src, out, moved, folded, _DANET_HINT)


# ------------------------------------------------------------------ PointRend
POINTREND = "PaddleSeg 2.x PointRend"
_POINTREND_HINT = ("A PaddleSeg PointRend needs PointRend(decoder='paddleseg'), the default. "
                   + _recipe_hint("PointRend", "pointrend"))


def _detect_pointrend(keys: Sequence[str], model: object) -> bool:
    return _has_prefix(keys, "neck.fpn_out.", "fpnhead.", "pointhead.")


def _convert_pointrend(state: State, model: object) -> Conversion:
    if model_is(model, "PointRend") and getattr(model, "decoder", "paddleseg") != "paddleseg":
        raise ValueError(f"detected a {POINTREND} checkpoint, but this PointRend is built with "
                         f"decoder={model.decoder!r}, a different network. {_POINTREND_HINT}")
    src, out, folded = dict(state), {}, []
    moved = 0
    levels = sorted({int(k.split(".")[2]) for k in src if k.startswith("neck.lateral_convs.")})
    for i in levels:
        peer, ours = f"neck.lateral_convs.{i}", f"neck.lateral_convs.{i}"
        moved += rename_prefix(src, out, f"{peer}.0.", f"{ours}._conv.")
        moved += rename_prefix(src, out, f"{peer}.1.", f"{ours}._batch_norm.")
        if f"{ours}._conv.bias" in out and f"{ours}._batch_norm._mean" in out:
            fold_bias_into_bn(out, f"{ours}._conv.bias", f"{ours}._batch_norm")
            folded.append(f"{peer}.0.bias")
    for i in levels[:-1]:
        moved += rename_prefix(src, out, f"neck.fpn_out.{i}.0.", f"neck.output_convs.{i}.")
    # PaddleSeg builds an output conv for the coarsest level too, and never calls it.
    unused = sorted(k for k in src if levels and k.startswith(f"neck.fpn_out.{levels[-1]}."))
    for k in range(len(levels)):
        # Sequential of conv (+ upsample, which has no weights) pairs for k > 0.
        for j in range(max(1, k)):
            moved += rename_prefix(src, out, f"fpnhead.scale_heads.{k}.{2 * j if k else 0}._conv.",
                                   f"fpn_head.scale_heads.{k}.{j}.")
    moved += rename_prefix(src, out, "fpnhead.conv_seg.", "fpn_head.cls.")
    fcs = sorted({int(k.split(".")[2]) for k in src if k.startswith("pointhead.fcs.")})
    for i in fcs:
        moved += rename_prefix(src, out, f"pointhead.fcs.{i}._conv.", f"point_head.fcs.{i}.")
    moved += rename_prefix(src, out, "pointhead.fc_seg.", "point_head.cls.")
    return _finish(POINTREND, src, out, moved, folded, _POINTREND_HINT, unused)


register_adapter("paddleseg.pspnet", _detect_pspnet, _convert_pspnet)
register_adapter("paddleseg.danet", _detect_danet, _convert_danet)
register_adapter("paddleseg.pointrend", _detect_pointrend, _convert_pointrend)
