"""mmsegmentation 1.x PSANet checkpoints -> this toolkit's PSANet.

mmsegmentation (https://github.com/open-mmlab/mmsegmentation, read at 1.2.2:
``mmseg/models/decode_heads/psa_head.py``, ``configs/_base_/models/psanet_r50-d8.py``)
builds ``PSAHead`` on the ResNetV1c d8 backbone of its PSPNet / DANet recipes
(:mod:`~paddleseg_ext.checkpoints.adapters.mmseg`) with an FCN auxiliary head.
Its head is our :class:`~paddleseg_ext.models.PSANet` built with
``psa_resize_rule: mmseg`` and ``psa_proj_padding: 1`` (what those switches
change is documented on :class:`~paddleseg_ext.models.layers.psa_block.PSAModule`);
every ``ConvModule`` has a norm, so no conv bias; the conversion is renames:

=================================================  ==========================================
mmsegmentation                                     paddleseg_ext
=================================================  ==========================================
``decode_head.{reduce,reduce_p}.conv`` / ``.bn``   ``psa.{reduce,reduce_p}``
``decode_head.{attention,attention_p}.0``          ``psa.{attention,attention_p}.0``
``decode_head.{attention,attention_p}.1``          ``psa.{attention,attention_p}.1`` (mask conv)
``decode_head.proj``                               ``psa.proj``
``decode_head.bottleneck``                         ``bottleneck``
``decode_head.conv_seg``                           ``cls``
``auxiliary_head.*``, ``backbone.*``               as for mmseg's PSPNet
=================================================  ==========================================

The mask size is read from the attention conv (``mask_h * mask_w`` output
channels: 9409 = 97x97 for Cityscapes and VOC, 4356 = 66x66 for ADE20K); a
model built with another mask size, or without mmseg's resize/proj rule, is
refused naming both.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Dict, Sequence

import numpy as np

from .base import Conversion, TensorMover, model_is, register_adapter
from .mmseg_resnet import check_model, check_recorded_config, is_mmseg, move_backbone, move_fcn_aux, recipe_hint

__all__ = ["PSANET"]

PSANET = "mmsegmentation PSANet"
_HINT = ("An mmsegmentation PSANet needs PSANet(psa_type='bi-direction', psa_resize_rule='mmseg', "
         "psa_proj_padding=1, psa_concat_order='collect_first') and the mask size of its recipe "
         "(97x97 Cityscapes / VOC, 66x66 ADE20K). " + recipe_hint("PSANet", "psanet"))
_MASK_KEY = "decode_head.attention.1.weight"


def _window(channels: int) -> str:
    side = math.isqrt(channels)
    return f"{side}x{side} masks" if side * side == channels else f"{channels}-cell masks"


def _detect(keys: Sequence[str], model: object) -> bool:
    return is_mmseg(keys) and _MASK_KEY in set(keys)


def _check_variant(state: Dict[str, np.ndarray], model: object) -> None:
    """Refuse a PSANet whose switches or mask size are not the file's."""
    if model is None or not model_is(model, "PSANet"):
        return
    psa = model.psa
    if psa is None:
        raise ValueError(f"detected an {PSANET} checkpoint, but this PSANet has use_psa=False. "
                         f"{_HINT}")
    bidirectional = "decode_head.reduce_p.conv.weight" in state
    names = ("collect", "distribute", "bi-direction")
    wrong = []
    if bidirectional != (psa.psa_type == 2):
        wrong.append(f"psa_type={names[psa.psa_type]!r} (the file: "
                     f"{'bi-direction' if bidirectional else 'one direction'})")
    for attr, want in (("resize_rule", "mmseg"), ("proj_padding", 1),
                       ("concat_order", "collect_first")):
        if getattr(psa, attr) != want:
            wrong.append(f"psa_{attr}={getattr(psa, attr)!r} (mmseg: {want!r})")
    if wrong:
        raise ValueError(f"detected an {PSANET} checkpoint, but this PSANet is built with "
                         f"{', '.join(wrong)}: the tensors would fit a different function. "
                         f"{_HINT}")
    channels = int(np.shape(state[_MASK_KEY])[0])
    mh, mw = psa.mask_size
    if channels != mh * mw:
        raise ValueError(f"detected an {PSANET} checkpoint with {_window(channels)} "
                         f"({channels} attention channels), but this PSANet is built with "
                         f"mask_h={mh}, mask_w={mw} ({mh * mw}): use the recipe of the "
                         f"checkpoint's dataset. {_HINT}")


def _convert(state: Dict[str, np.ndarray], model: object) -> Conversion:
    check_model(model, "PSANet", PSANET, _HINT, list(state))
    _check_variant(state, model)
    m = TensorMover(state)
    move_backbone(m)
    # In the peer's key order (the step counters are reported in it).
    for reduce, attention in (("reduce", "attention"), ("reduce_p", "attention_p")):
        m.conv_bn(f"decode_head.{reduce}.conv", f"decode_head.{reduce}.bn", f"psa.{reduce}")
        peer = f"decode_head.{attention}"
        m.conv_bn(f"{peer}.0.conv", f"{peer}.0.bn", f"psa.{attention}.0")
        m.prefix(f"{peer}.1.weight", f"psa.{attention}.1.weight")
    m.conv_bn("decode_head.proj.conv", "decode_head.proj.bn", "psa.proj")
    m.conv_bn("decode_head.bottleneck.conv", "decode_head.bottleneck.bn", "bottleneck")
    m.prefix("decode_head.conv_seg.", "cls.")
    move_fcn_aux(m)
    return m.finish(PSANET, _HINT)


register_adapter("mmseg.psanet", _detect, _convert,
                 partial(check_recorded_config, folder="psanet"))
