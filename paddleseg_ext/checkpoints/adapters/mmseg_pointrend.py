"""mmsegmentation 1.x PointRend checkpoints -> this toolkit's PointRend.

mmsegmentation (https://github.com/open-mmlab/mmsegmentation, read at 1.2.2:
``mmseg/models/segmentors/cascade_encoder_decoder.py``, ``necks/fpn.py``,
``decode_heads/fpn_head.py``, ``decode_heads/point_head.py``,
``configs/_base_/models/pointrend_r50.py``; mmcv 2.1 ``ops/point_sample.py``)
builds a ``CascadeEncoderDecoder``: ResNetV1c without dilation (strides
1, 2, 2, 2), an ``FPN`` neck, ``decode_head.0`` an ``FPNHead`` and
``decode_head.1`` a ``PointHead``. That is our
:class:`~paddleseg_ext.models.PointRend` with ``decoder: semantic_fpn``,
``fpn_upsample: fixed_x2``, ``point_padding: zeros``, ``subdivision_cap:
False`` and the ResNet_vd switches of
:data:`~paddleseg_ext.checkpoints.adapters.mmseg.BACKBONE_SWITCHES` at output
stride 32. The neck's and point head's convs have no norm (with bias), the
scale heads' are conv + BN; the conversion is renames:

=================================================  ==========================================
mmsegmentation                                     paddleseg_ext
=================================================  ==========================================
``neck.lateral_convs.<i>.conv``                    ``neck.lateral_convs.<i>``
``neck.fpn_convs.<i>.conv``                        ``neck.output_convs.<i>``
``decode_head.0.scale_heads.<i>.<2k>.conv/bn``     ``fpn_head.scale_heads.<i>.<k>``
                                                   (odd indices are the parameter-free upsamples)
``decode_head.0.conv_seg``                         ``fpn_head.cls``
``decode_head.1.fcs.<k>.conv``                     ``point_head.fcs.<k>`` (Conv1d, same layout)
``decode_head.1.fc_seg``                           ``point_head.cls``
``backbone.*``                                     as for mmseg's PSPNet
=================================================  ==========================================
"""

from __future__ import annotations

import re
from functools import partial
from typing import Dict, Sequence

import numpy as np

from .base import Conversion, TensorMover, model_is, register_adapter
from .mmseg_resnet import check_model, check_recorded_config, is_mmseg, move_backbone, recipe_hint

__all__ = ["POINTREND"]

POINTREND = "mmsegmentation PointRend"
_SWITCHES = {"decoder": "semantic_fpn", "fpn_upsample": "fixed_x2", "point_padding": "zeros",
             "subdivision_cap": False}
_HINT = ("An mmsegmentation PointRend needs PointRend(" + ", ".join(
    f"{k}={v!r}" for k, v in _SWITCHES.items()) + ") on a ResNet_vd with output_stride 32. "
    + recipe_hint("PointRend", "pointrend").replace("_r50-d8_4xb2-80k", "_r50_4xb2-80k"))
#: Semantic FPN reads every stage: mmseg's ResNetV1c undilated, output stride 32.
_FORMS = {32: [1, 1, 1, 1]}
_SCALE_CONV = re.compile(r"decode_head\.0\.scale_heads\.(\d+)\.(\d+)\.conv\.weight$")
_LEVEL = re.compile(r"neck\.lateral_convs\.(\d+)\.conv\.weight$")
_FC = re.compile(r"decode_head\.1\.fcs\.(\d+)\.conv\.weight$")


def _detect(keys: Sequence[str], model: object) -> bool:
    return is_mmseg(keys) and "decode_head.1.fc_seg.weight" in set(keys)


def _check_variant(model: object) -> None:
    """Refuse a PointRend whose switches would give another function with the same tensors."""
    if model is None or not model_is(model, "PointRend"):
        return
    have = {"decoder": model.decoder, "fpn_upsample": getattr(model.fpn_head, "upsample", None),
            "point_padding": model.padding_mode, "subdivision_cap": model.subdivision_cap}
    wrong = [f"{k}={have[k]!r} (mmseg: {v!r})" for k, v in _SWITCHES.items() if have[k] != v]
    stride = getattr(model.backbone, "output_stride", 32)
    if stride != 32:
        wrong.append(f"backbone output_stride={stride} (mmseg: 32)")
    if wrong:
        raise ValueError(f"detected an {POINTREND} checkpoint, but this PointRend is built with "
                         f"{', '.join(wrong)}: the tensors would fit a different function. "
                         f"{_HINT}")


def _convert(state: Dict[str, np.ndarray], model: object) -> Conversion:
    _check_variant(model)  # first: it names PointRend's own switches (output stride included)
    check_model(model, "PointRend", POINTREND, _HINT, list(state), forms=_FORMS)
    m = TensorMover(state)
    move_backbone(m)
    for level in sorted({int(x.group(1)) for x in map(_LEVEL.match, m.src) if x}):
        m.prefix(f"neck.lateral_convs.{level}.conv.", f"neck.lateral_convs.{level}.")
        m.prefix(f"neck.fpn_convs.{level}.conv.", f"neck.output_convs.{level}.")
    for level, index in sorted({(int(x.group(1)), int(x.group(2)))
                                for x in map(_SCALE_CONV.match, m.src) if x}):
        peer = f"decode_head.0.scale_heads.{level}.{index}"
        # Sequential(conv, upsample, conv, upsample, ...): the k-th conv sits at index 2k.
        m.conv_bn(f"{peer}.conv", f"{peer}.bn", f"fpn_head.scale_heads.{level}.{index // 2}")
    m.prefix("decode_head.0.conv_seg.", "fpn_head.cls.")
    for k in sorted({int(x.group(1)) for x in map(_FC.match, m.src) if x}):
        m.prefix(f"decode_head.1.fcs.{k}.conv.", f"point_head.fcs.{k}.")
    m.prefix("decode_head.1.fc_seg.", "point_head.cls.")
    return m.finish(POINTREND, _HINT)


register_adapter("mmseg.pointrend", _detect, _convert,
                 partial(check_recorded_config, folder="pointrend"))
