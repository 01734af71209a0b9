"""mmsegmentation 1.x checkpoints -> this toolkit's PSPNet and DANet.

mmsegmentation (https://github.com/open-mmlab/mmsegmentation, read at 1.2.2:
``mmseg/models/backbones/resnet.py``, ``models/utils/res_layer.py``,
``models/decode_heads/psp_head.py``, ``da_head.py``, ``fcn_head.py``,
``models/utils/self_attention_block.py``; mmcv 2.1 ``cnn/bricks/conv_module.py``
and ``scale.py``) saves ``{'meta': ..., 'state_dict': EncoderDecoder.state_dict()}``
(files written by mmengine also carry ``message_hub``, ``optimizer`` ...;
:mod:`paddleseg_ext.checkpoints.weights` takes the ``state_dict`` out).

Its ``ResNetV1c`` d8 backbone is our :class:`~paddleseg_ext.models.backbones.ResNet_vd`
built with ``shortcut: strided_conv``, ``identity_shortcut: True``,
``contract_dilation: True`` and ``dilate_basic_second_conv: False``; its
``PSPHead`` / ``DAHead`` / ``FCNHead`` (one conv) are our heads with the
widths its configs set. Every ``ConvModule`` followed by a norm has no conv
bias (PAM's norm-free projections are plain ``nn.Conv2d`` with a bias, as
ours), so the conversion is renames, plus a reshape of ``Scale``'s 0-d
parameter to our ``[1]``:

=============================================  ==============================================
mmsegmentation                                 paddleseg_ext
=============================================  ==============================================
``backbone.stem.{0,3,6}`` / ``{1,4,7}``        ``backbone.conv1_{1,2,3}`` conv / BN
``backbone.conv1`` / ``backbone.bn1`` ("b")    ``backbone.conv1`` conv / BN (``stem: 7x7``)
``backbone.layer<s>.<i>.conv<j>/bn<j>``        ``backbone.bb_<s-1>_<i>.conv<j-1>``
``backbone.layer<s>.<i>.downsample.0/1``       ``backbone.bb_<s-1>_<i>.short``
``decode_head.psp_modules.<i>.1``              ``psp_module.stages.<i>.1``
``decode_head.bottleneck``                     ``psp_module.bottleneck``
``decode_head.conv_seg``                       ``cls`` (PSPNet), ``head.fused_cls.1`` (DANet)
``decode_head.{pam,cam}_in_conv``              ``head.{pam,cam}_in``
``decode_head.{pam,cam}_out_conv``             ``head.{pam,cam}_out``
``decode_head.{pam,cam}_conv_seg``             ``head.{pam,cam}_cls.1``
``decode_head.pam.{query,key,value}_project``  ``head.pam.{query,key,value}_conv``
``decode_head.pam.gamma.scale`` (0-d)          ``head.pam.gamma`` ``[1]``
``decode_head.cam.gamma.scale`` (0-d)          ``head.cam.beta`` ``[1]``
``auxiliary_head.convs.0``                     ``aux_head.conv_bn_relu``
``auxiliary_head.conv_seg``                    ``aux_head.conv``
=============================================  ==============================================

mmseg's "b" configs (``pspnet_r50b-d8_...``: ``type='ResNet'``, initialised from
torchvision's ImageNet ResNets) replace ResNetV1c's deep stem by torchvision's
7x7 ``conv1`` / ``bn1``: ours with ``stem: 7x7`` and otherwise the same switches
(mmseg's ``ResNet`` and ``ResNetV1c`` share every other layer). A file of one
stem given to a backbone of the other is refused naming both. Its PSPNet d32 configs
(``pspnet_r50-d32_...``, ``pspnet_r50b-d32_...``: strides (1, 2, 2, 2) with the d8
dilations (1, 1, 2, 4)) are ours with ``output_stride: 32`` and ``dilations: [1, 1, 2, 4]``;
their files hold the same tensors as a d8 file's, so the tensors cannot tell the function:
the config text mmseg records in a file's ``meta`` can, and a recipe of another backbone form
or ``align_corners`` than it records is refused (``check_recorded_config``); a file that
records none is taken on its recipe.

A BatchNorm's ``num_batches_tracked`` (a training step counter, unused in
eval with a fixed momentum) is reported as not loaded. The proof that the
logits equal mmsegmentation's is ``tests/test_peer_mmseg.py`` (in
``.venv-peers``); the key/shape lists it checks are kept in
``tests/fixtures/mmseg/``.
"""

from __future__ import annotations

from functools import partial
from typing import Dict, Sequence

import numpy as np

from .base import Conversion, TensorMover, model_is, register_adapter
from .mmseg_resnet import (D8_OR_D32, check_model, check_recorded_config, is_mmseg,
                           move_backbone, move_fcn_aux, recipe_hint)

__all__ = ["PSPNET", "DANET"]

State = Dict[str, np.ndarray]
PSPNET = "mmsegmentation PSPNet"
DANET = "mmsegmentation DANet"


def _detect_pspnet(keys: Sequence[str], model: object) -> bool:
    return is_mmseg(keys) and any(k.startswith("decode_head.psp_modules.") for k in keys)


def _convert_pspnet(state: State, model: object) -> Conversion:
    hint = recipe_hint("PSPNet", "pspnet")
    check_model(model, "PSPNet", PSPNET, hint, list(state), forms=D8_OR_D32)
    m = TensorMover(state)
    move_backbone(m)
    bins = sorted({int(k.split(".")[2]) for k in m.src if k.startswith("decode_head.psp_modules.")})
    for i in bins:
        peer = f"decode_head.psp_modules.{i}.1"
        m.conv_bn(f"{peer}.conv", f"{peer}.bn", f"psp_module.stages.{i}.1")
    m.conv_bn("decode_head.bottleneck.conv", "decode_head.bottleneck.bn", "psp_module.bottleneck")
    m.prefix("decode_head.conv_seg.", "cls.")
    move_fcn_aux(m)
    return m.finish(PSPNET, hint)


_DANET_HINT = "An mmsegmentation DANet needs DANet(aux_head='fcn', align_mode=0). " + recipe_hint(
    "DANet", "danet")


def _detect_danet(keys: Sequence[str], model: object) -> bool:
    return is_mmseg(keys) and any(k.startswith("decode_head.pam.") for k in keys)


def _convert_danet(state: State, model: object) -> Conversion:
    if model is not None and model_is(model, "DANet") and (model.align_mode != 0 or model.aux_head_type != "fcn"):
        raise ValueError(f"detected an {DANET} checkpoint, but this DANet is built with "
                         f"aux_head={model.aux_head_type!r}, align_mode={model.align_mode} "
                         f"(mmseg resizes its logits with half-pixel centres, align_mode=0, and "
                         f"has an FCN auxiliary head). {_DANET_HINT}")
    check_model(model, "DANet", DANET, _DANET_HINT, list(state))
    m = TensorMover(state)
    move_backbone(m)
    for branch in ("pam", "cam"):
        for part in ("in", "out"):
            peer = f"decode_head.{branch}_{part}_conv"
            m.conv_bn(f"{peer}.conv", f"{peer}.bn", f"head.{branch}_{part}")
        m.prefix(f"decode_head.{branch}_conv_seg.", f"head.{branch}_cls.1.")
    for proj in ("query", "key", "value"):
        # PAM's projections have no norm, so mmseg builds them as plain nn.Conv2d (with bias).
        m.prefix(f"decode_head.pam.{proj}_project.", f"head.pam.{proj}_conv.")
    m.scale("decode_head.pam.gamma.scale", "head.pam.gamma")
    m.scale("decode_head.cam.gamma.scale", "head.cam.beta")
    m.prefix("decode_head.conv_seg.", "head.fused_cls.1.")
    move_fcn_aux(m)
    return m.finish(DANET, _DANET_HINT)


register_adapter("mmseg.pspnet", _detect_pspnet, _convert_pspnet,
                 partial(check_recorded_config, folder="pspnet"))
register_adapter("mmseg.danet", _detect_danet, _convert_danet,
                 partial(check_recorded_config, folder="danet"))
