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
stem given to a backbone of the other is refused naming both.

A BatchNorm's ``num_batches_tracked`` (a training step counter, unused in
eval with a fixed momentum) is reported as not loaded. The proof that the
logits equal mmsegmentation's is ``tests/test_peer_mmseg.py`` (in
``.venv-peers``); the key/shape lists it checks are kept in
``tests/fixtures/mmseg/``.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence

import numpy as np

from .base import Conversion, register_adapter, rename_prefix

__all__ = ["PSPNET", "DANET", "BACKBONE_SWITCHES", "STEMS"]

State = Dict[str, np.ndarray]
PSPNET = "mmsegmentation PSPNet"
DANET = "mmsegmentation DANet"
#: The ResNet_vd switches that build mmseg's ResNetV1c (d8).
BACKBONE_SWITCHES = {"shortcut": "strided_conv", "identity_shortcut": True,
                     "contract_dilation": True, "dilate_basic_second_conv": False}
#: Our ``stem`` switch for each mmseg stem, by the key that only that stem has: ResNetV1c's
#: deep stem, or ResNet's (the "b" configs) 7x7 conv.
STEMS = {"backbone.stem.0.weight": "deep", "backbone.conv1.weight": "7x7"}
_STEM_NAMES = {"deep": "ResNetV1c's deep stem (backbone.stem.*)",
               "7x7": "ResNet's 7x7 stem (backbone.conv1 / bn1, the 'b' configs)"}
_COUNTER = "num_batches_tracked"
_COUNTER_REASON = "BatchNorm step counters (num_batches_tracked, unused in eval)"
_BLOCK = re.compile(r"backbone\.layer(\d+)\.(\d+)\.")
_BN = (("weight", "weight"), ("bias", "bias"), ("running_mean", "_mean"),
       ("running_var", "_variance"))


def _hint(model: str, folder: str) -> str:
    return (f"Build the {model} from the recipe named after the mmsegmentation config the "
            f"checkpoint was trained with (configs/{folder}/mmseg/, e.g. "
            f"configs/{folder}/mmseg/{folder}_r50-d8_4xb2-80k_cityscapes-512x1024.yml): same "
            f"depth, num_classes and ResNet_vd switches "
            + ", ".join(f"{k}: {v}" for k, v in BACKBONE_SWITCHES.items()))


def _model_is(model: object, name: str) -> bool:
    # Imported on use: the models import the loaders, which import this package.
    from paddleseg_ext import models

    return isinstance(model, getattr(models, name))


def _is_mmseg(keys: Sequence[str]) -> bool:
    names = set(keys)
    return any(k in names for k in STEMS) and any(k.startswith("decode_head.") for k in names)


def _file_stem(keys: Sequence[str]) -> str:
    """Our ``stem`` switch for the file's stem (the deep stem when it has neither key)."""
    names = set(keys)
    return next((stem for key, stem in STEMS.items() if key in names), "deep")


class _Mover:
    """Moves peer tensors into our names, counting renames and setting aside step counters."""

    def __init__(self, state: State) -> None:
        self.src: State = dict(state)
        self.out: State = {}
        self.moved = 0
        self.counters: List[str] = []

    def prefix(self, peer: str, ours: str) -> None:
        self.moved += rename_prefix(self.src, self.out, peer, ours)

    def bn(self, peer: str, ours: str) -> None:
        """mmseg / torch ``BatchNorm2d`` at ``peer`` -> Paddle ``BatchNorm2D`` at ``ours``."""
        for theirs, mine in _BN:
            self.prefix(f"{peer}.{theirs}", f"{ours}.{mine}")
        counter = f"{peer}.{_COUNTER}"
        if counter in self.src:
            self.src.pop(counter)
            self.counters.append(counter)

    def conv_bn(self, peer_conv: str, peer_bn: str, ours: str) -> None:
        """A bias-free conv and its BN -> our ConvBN(ReLU) at ``ours``."""
        self.prefix(f"{peer_conv}.weight", f"{ours}._conv.weight")
        self.bn(peer_bn, f"{ours}._batch_norm")

    def scale(self, peer: str, ours: str) -> None:
        """mmcv ``Scale`` (a 0-d parameter) -> our ``[1]`` parameter."""
        if peer in self.src:
            value = np.asarray(self.src.pop(peer))
            self.out[ours] = value.reshape([1]) if value.size == 1 else value
            self.moved += 1

    def finish(self, layout: str, hint: str) -> Conversion:
        return Conversion(layout=layout, state=self.out, renamed=self.moved,
                          unplaced=sorted(self.src), hint=hint,
                          not_loaded={_COUNTER_REASON: self.counters} if self.counters else {})


def _check_model(model: object, name: str, layout: str, hint: str,
                 keys: Sequence[str] = ()) -> None:
    """Refuse a model of another architecture, or a backbone of another stem than the file's
    (``keys``), before listing every key that differs."""
    if model is not None and not _model_is(model, name):
        raise ValueError(f"detected an {layout} checkpoint, but the model is a "
                         f"{type(model).__name__}. {hint}")
    _check_backbone(model, layout, hint)
    if model is not None and keys:
        _check_stem(_file_stem(keys), model.backbone.stem, layout, name.lower())


def _check_stem(file_stem: str, model_stem: str, layout: str, folder: str) -> None:
    if file_stem != model_stem:
        configs = "the 'b' configs, r<depth>b-d8" if file_stem == "7x7" else "r<depth>-d8"
        raise ValueError(
            f"detected an {layout} checkpoint with {_STEM_NAMES[file_stem]}, but this model's "
            f"ResNet_vd is built with stem={model_stem!r}, {_STEM_NAMES[model_stem]}: build it "
            f"with stem: {file_stem}, as the recipes of mmseg's {configs} do (configs/{folder}"
            f"/mmseg/<config>.yml)")


def _check_backbone(model: object, layout: str, hint: str) -> None:
    """Refuse a backbone whose tensors would fit but whose function is not ResNetV1c's
    (no model, as for ``tools/convert_weights.py`` without ``--config``: nothing to check)."""
    if model is None:
        return
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "stages"):
        raise ValueError(f"detected an {layout} checkpoint (ResNetV1c backbone), but this "
                         f"{type(model).__name__} has a {type(backbone).__name__} backbone. {hint}")
    wrong = [f"{k}={getattr(backbone, k)!r} (mmseg: {v!r})" for k, v in BACKBONE_SWITCHES.items()
             if getattr(backbone, k) != v
             and not (k == "dilate_basic_second_conv" and backbone.depth >= 50)]
    if wrong:
        raise ValueError(f"detected an {layout} checkpoint, but this model's ResNet_vd is "
                         f"built with {', '.join(wrong)}: the tensors would fit a different "
                         f"function. {hint}")


def _move_backbone(m: _Mover) -> None:
    if _file_stem(m.src) == "7x7":
        m.conv_bn("backbone.conv1", "backbone.bn1", "backbone.conv1")
    for j, ours in enumerate(("conv1_1", "conv1_2", "conv1_3")):
        m.conv_bn(f"backbone.stem.{3 * j}", f"backbone.stem.{3 * j + 1}", f"backbone.{ours}")
    blocks = sorted({(int(b.group(1)), int(b.group(2))) for b in map(_BLOCK.match, m.src) if b})
    for stage, i in blocks:  # mmseg's layer<stage>.<i> is our bb_<stage - 1>_<i>
        peer, ours = f"backbone.layer{stage}.{i}", f"backbone.bb_{stage - 1}_{i}"
        for j in range(3):  # conv1..3 (a basic block has two)
            m.conv_bn(f"{peer}.conv{j + 1}", f"{peer}.bn{j + 1}", f"{ours}.conv{j}")
        m.conv_bn(f"{peer}.downsample.0", f"{peer}.downsample.1", f"{ours}.short")


def _move_fcn_aux(m: _Mover) -> None:
    m.conv_bn("auxiliary_head.convs.0.conv", "auxiliary_head.convs.0.bn", "aux_head.conv_bn_relu")
    m.prefix("auxiliary_head.conv_seg.", "aux_head.conv.")


def _detect_pspnet(keys: Sequence[str], model: object) -> bool:
    return _is_mmseg(keys) and any(k.startswith("decode_head.psp_modules.") for k in keys)


def _convert_pspnet(state: State, model: object) -> Conversion:
    hint = _hint("PSPNet", "pspnet")
    _check_model(model, "PSPNet", PSPNET, hint, list(state))
    m = _Mover(state)
    _move_backbone(m)
    bins = sorted({int(k.split(".")[2]) for k in m.src if k.startswith("decode_head.psp_modules.")})
    for i in bins:
        peer = f"decode_head.psp_modules.{i}.1"
        m.conv_bn(f"{peer}.conv", f"{peer}.bn", f"psp_module.stages.{i}.1")
    m.conv_bn("decode_head.bottleneck.conv", "decode_head.bottleneck.bn", "psp_module.bottleneck")
    m.prefix("decode_head.conv_seg.", "cls.")
    _move_fcn_aux(m)
    return m.finish(PSPNET, hint)


_DANET_HINT = "An mmsegmentation DANet needs DANet(aux_head='fcn', align_mode=0). " + _hint(
    "DANet", "danet")


def _detect_danet(keys: Sequence[str], model: object) -> bool:
    return _is_mmseg(keys) and any(k.startswith("decode_head.pam.") for k in keys)


def _convert_danet(state: State, model: object) -> Conversion:
    if model is not None and _model_is(model, "DANet") and (model.align_mode != 0 or model.aux_head_type != "fcn"):
        raise ValueError(f"detected an {DANET} checkpoint, but this DANet is built with "
                         f"aux_head={model.aux_head_type!r}, align_mode={model.align_mode} "
                         f"(mmseg resizes its logits with half-pixel centres, align_mode=0, and "
                         f"has an FCN auxiliary head). {_DANET_HINT}")
    _check_model(model, "DANet", DANET, _DANET_HINT, list(state))
    m = _Mover(state)
    _move_backbone(m)
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
    _move_fcn_aux(m)
    return m.finish(DANET, _DANET_HINT)


register_adapter("mmseg.pspnet", _detect_pspnet, _convert_pspnet)
register_adapter("mmseg.danet", _detect_danet, _convert_danet)
