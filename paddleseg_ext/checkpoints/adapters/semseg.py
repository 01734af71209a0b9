"""The authors' semseg checkpoints -> this toolkit's PSPNet and PSANet.

hszhao/semseg (https://github.com/hszhao/semseg, read at its head: ``model/resnet.py``,
``model/pspnet.py``, ``model/psanet.py``, ``tool/train.py``, ``tool/test.py``) is the
PyTorch code of PSPNet (Zhao et al., CVPR 2017) and PSANet (Zhao et al., ECCV 2018)
by their first author. ``tool/train.py`` saves ``{'epoch', 'state_dict', 'optimizer'}``
from a ``DistributedDataParallel`` model, so every key starts with ``module.``;
:mod:`paddleseg_ext.checkpoints.weights` takes the ``state_dict`` out and names the
entries it leaves out (the epoch and the optimizer state).

Its ResNet (``deep_base=True``) is our
:class:`~paddleseg_ext.models.backbones.ResNet_vd` built with
``stem_channels: [64, 64, 128]`` and ``shortcut: strided_conv`` at output stride 8
(dilation 2 / 4 on every block of stages 3 / 4, as ours by default). Its ``PPM`` +
``cls`` is our PSPNet head with ``pp_out_channels: 512``; its ``PSA`` is our
:class:`~paddleseg_ext.models.layers.psa_block.PSAModule` (collect branch first);
both resize with ``align_corners=True``. Every conv before a BatchNorm has no bias,
so the conversion is renames only:

====================================================  =================================
semseg (after ``module.``)                            paddleseg_ext
====================================================  =================================
``layer0.{0,3,6}`` / ``layer0.{1,4,7}``               ``backbone.conv1_{1,2,3}`` conv / BN
``layer<s>.<i>.conv<j>`` / ``bn<j>``                  ``backbone.bb_<s-1>_<i>.conv<j-1>``
``layer<s>.<i>.downsample.0`` / ``.1``                ``backbone.bb_<s-1>_<i>.short``
``ppm.features.<k>.1`` / ``.2`` (PSPNet)              ``psp_module.stages.<k>.1``
``cls.0`` / ``cls.1``                                 ``psp_module.bottleneck`` (PSPNet),
                                                      ``bottleneck`` (PSANet)
``cls.4``                                             ``cls``
``psa.{reduce,reduce_p,proj}.0`` / ``.1`` (PSANet)    ``psa.{reduce,reduce_p,proj}``
``psa.attention{,_p}.0`` / ``.1``                     ``psa.attention{,_p}.0``
``psa.attention{,_p}.3``                              ``psa.attention{,_p}.1``
``aux.0`` / ``aux.1``                                 ``aux_head.conv_bn_relu``
``aux.4``                                             ``aux_head.conv``
====================================================  =================================

A BatchNorm's ``num_batches_tracked`` is reported as not loaded. The proof that
the logits equal semseg's is ``tests/test_peer_semseg.py`` (in ``.venv-peers``,
with a semseg checkout at ``SEMSEG_ROOT``); the key/shape lists it checks are
kept in ``tests/fixtures/semseg/``.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from .base import Conversion, TensorMover, register_adapter
from .torchvision_resnet import move_resnet_blocks

__all__ = ["PSPNET", "PSANET", "BACKBONE_SWITCHES"]

State = Dict[str, np.ndarray]
PSPNET = "semseg PSPNet"
PSANET = "semseg PSANet"
#: The ResNet_vd switches that build semseg's ``deep_base`` ResNet at output stride 8.
BACKBONE_SWITCHES = {"stem": "deep", "stem_channels": [64, 64, 128], "shortcut": "strided_conv",
                     "identity_shortcut": False, "contract_dilation": False, "output_stride": 8,
                     "dilations": [1, 1, 2, 4]}
_PREFIX = "module."


def _hint(model: str) -> str:
    folder = model.lower()
    return (f"Build the {model} from the recipe named after the semseg config the checkpoint "
            f"was trained with (configs/{folder}/semseg/, e.g. configs/{folder}/semseg/"
            f"ade20k_{folder}50.yml): same layers, classes and ResNet_vd switches "
            + ", ".join(f"{k}: {v}" for k, v in BACKBONE_SWITCHES.items())
            + ", align_corners: True")


def _strip(keys: Sequence[str]) -> Dict[str, str]:
    """semseg key -> key without DDP's ``module.`` (only when every key has it)."""
    if keys and all(k.startswith(_PREFIX) for k in keys):
        return {k: k[len(_PREFIX):] for k in keys}
    return {k: k for k in keys}


def _is_semseg(keys: Sequence[str], head: str) -> bool:
    names = set(_strip(list(keys)).values())
    return ("layer0.0.weight" in names and "layer0.6.weight" in names and "cls.4.weight" in names
            and any(k.startswith(head) for k in names))


def _check_model(model: object, name: str, layout: str, hint: str) -> None:
    """Refuse a model whose tensors would fit but whose function is not semseg's."""
    if model is None:  # tools/convert_weights.py without --config: nothing to check
        return
    from paddleseg_ext import models  # late: the models import the loaders

    if not isinstance(model, getattr(models, name)):
        raise ValueError(f"detected a {layout} checkpoint, but the model is a "
                         f"{type(model).__name__}. {hint}")
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "stem_channels"):
        raise ValueError(f"detected a {layout} checkpoint (semseg's ResNet), but this "
                         f"{type(model).__name__} has a {type(backbone).__name__} backbone. {hint}")
    wrong = [f"{k}={getattr(backbone, k)!r} (semseg: {v!r})"
             for k, v in BACKBONE_SWITCHES.items() if getattr(backbone, k) != v]
    if not model.align_corners:
        wrong.append("align_corners=False (semseg: True)")
    psa = getattr(model, "psa", None)
    if psa is not None and psa.psa_type == 2 and psa.concat_order != "collect_first":
        wrong.append(f"psa_concat_order={psa.concat_order!r} (semseg: 'collect_first')")
    if wrong:
        raise ValueError(f"detected a {layout} checkpoint, but this model is built with "
                         f"{', '.join(wrong)}: the tensors would fit a different function. {hint}")


def _mover(state: State) -> TensorMover:
    names = _strip(list(state))
    return TensorMover({names[k]: v for k, v in state.items()})


def _move_backbone(m: TensorMover) -> None:
    for j, ours in enumerate(("conv1_1", "conv1_2", "conv1_3")):
        m.conv_bn(f"layer0.{3 * j}", f"layer0.{3 * j + 1}", f"backbone.{ours}")
    move_resnet_blocks(m, "", "backbone.")


def _move_heads(m: TensorMover, bottleneck: str) -> None:
    """semseg's ``cls`` (3x3 ConvBNReLU, dropout, 1x1 conv) and ``aux`` (the same on stage 3)."""
    m.conv_bn("cls.0", "cls.1", bottleneck)
    m.prefix("cls.4.", "cls.")
    m.conv_bn("aux.0", "aux.1", "aux_head.conv_bn_relu")
    m.prefix("aux.4.", "aux_head.conv.")


def _detect_pspnet(keys: Sequence[str], model: object) -> bool:
    return _is_semseg(keys, "ppm.features.")


def _convert_pspnet(state: State, model: object) -> Conversion:
    hint = _hint("PSPNet")
    _check_model(model, "PSPNet", PSPNET, hint)
    m = _mover(state)
    _move_backbone(m)
    bins = sorted({int(k.split(".")[2]) for k in m.src if k.startswith("ppm.features.")})
    for k in bins:
        m.conv_bn(f"ppm.features.{k}.1", f"ppm.features.{k}.2", f"psp_module.stages.{k}.1")
    _move_heads(m, "psp_module.bottleneck")
    return m.finish(PSPNET, hint)


def _detect_psanet(keys: Sequence[str], model: object) -> bool:
    return _is_semseg(keys, "psa.")


def _convert_psanet(state: State, model: object) -> Conversion:
    hint = _hint("PSANet")
    _check_model(model, "PSANet", PSANET, hint)
    m = _mover(state)
    _move_backbone(m)
    for part in ("reduce", "reduce_p", "proj"):
        m.conv_bn(f"psa.{part}.0", f"psa.{part}.1", f"psa.{part}")
    for part in ("attention", "attention_p"):
        m.conv_bn(f"psa.{part}.0", f"psa.{part}.1", f"psa.{part}.0")
        m.prefix(f"psa.{part}.3.", f"psa.{part}.1.")
    _move_heads(m, "bottleneck")
    return m.finish(PSANET, hint)


register_adapter("semseg.pspnet", _detect_pspnet, _convert_pspnet)
register_adapter("semseg.psanet", _detect_psanet, _convert_psanet)
