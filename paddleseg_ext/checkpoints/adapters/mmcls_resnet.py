"""mmclassification / mmpretrain ImageNet ResNet files -> our ResNet_vd with the 7x7 stem.

mmsegmentation's ResNet-strikes-back recipes (``pspnet_r50-d8-rsb_4xb2-adamw-80k_...``)
initialise their ``type='ResNet'`` backbone from mmcls' ImageNet file
``resnet50_8xb256-rsb-a1-600e_in1k_20211228-20e21305.pth`` (Wightman et al., "ResNet
strikes back: An improved training procedure in timm", https://arxiv.org/abs/2110.00476).
mmcls / mmpretrain save ``{'meta', 'state_dict'}`` of an ``ImageClassifier``: the
``ResNet`` backbone under ``backbone.`` and a ``LinearClsHead`` whose ``fc`` sits at
``head.fc``. Their ``ResNet`` (``mmpretrain/models/backbones/resnet.py``, read at
mmpretrain's head; mmseg's ``ResNet``, which it mirrors, has the same names) is
torchvision's: a 7x7 ``conv1`` with ``bn1``, ``layer1..4`` of blocks with ``conv<j>`` /
``bn<j>``, the stride on the 3x3 conv (``style='pytorch'``), a strided 1x1 conv + BN
``downsample`` only where a block changes the shape. So the file initialises our
``ResNet_vd`` with ``stem: 7x7`` and ``shortcut: strided_conv`` (plus
``identity_shortcut: True`` for ResNet18/34) through ``pretrained:``:

===================================  ==========================================
mmcls / mmpretrain                   paddleseg_ext (backbone)
===================================  ==========================================
``backbone.conv1`` / ``backbone.bn1``  ``conv1`` conv / BN
``backbone.layer<s>.<i>.conv<j>``    ``bb_<s-1>_<i>.conv<j-1>`` (with ``bn<j>``)
``backbone.layer<s>.<i>.downsample``  ``bb_<s-1>_<i>.short``
``head.fc.weight``, ``head.fc.bias``  not loaded (the ImageNet classifier), reported
===================================  ==========================================

BatchNorm step counters are reported as not loaded. ``tests/test_peer_mmseg.py`` checks,
in ``.venv-peers``, that a file of mmseg's own ``ResNet`` (mmcls' layout) gives that
model's four stage features here.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from .base import Conversion, register_adapter
from .torchvision_resnet import BACKBONE_SWITCHES, convert_imagenet_resnet

__all__ = ["LAYOUT"]

LAYOUT = "mmcls / mmpretrain ImageNet ResNet"
_CLASSIFIER = ("head.fc.weight", "head.fc.bias")
_CLASSIFIER_REASON = "ImageNet classifier tensors (head.fc, not part of the backbone)"
_HINT = ("Build the backbone with " + ", ".join(f"{k}: {v}" for k, v in BACKBONE_SWITCHES.items())
         + " (and identity_shortcut: True for ResNet18/34) to initialise it from an mmcls / "
         "mmpretrain ResNet file, as the recipes of mmseg's rsb configs do (configs/pspnet/mmseg/"
         "pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024.yml)")


def _is_resnet_vd(model: object) -> bool:
    from paddleseg_ext.models.backbones.resnet_vd import ResNet_vd  # late: models import loaders

    return isinstance(model, ResNet_vd)


def _detect(keys: Sequence[str], model: object) -> bool:
    return _is_resnet_vd(model) and {"backbone.conv1.weight", "backbone.bn1.running_mean",
                                     "backbone.layer1.0.conv1.weight", "head.fc.weight"} <= set(keys)


def _convert(state: Dict[str, np.ndarray], model: object) -> Conversion:
    return convert_imagenet_resnet(state, model, LAYOUT, "backbone.", _CLASSIFIER, _CLASSIFIER_REASON,
                                   "mmcls", _HINT)


register_adapter("mmcls.resnet", _detect, _convert)
