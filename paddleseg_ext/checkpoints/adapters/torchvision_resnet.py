"""torchvision ImageNet ResNet files -> this toolkit's ResNet_vd with the 7x7 stem.

torchvision (https://github.com/pytorch/vision, ``torchvision/models/resnet.py``)
publishes its ImageNet ResNets (``resnet50-0676ba61.pth``, ``resnet50-11ad3fa6.pth``
...) as plain state dicts: a 7x7 ``conv1`` with ``bn1``, ``layer1..4`` of
``BasicBlock`` / ``Bottleneck`` (stride on the 3x3 conv, ResNet v1.5) whose
``downsample`` is a strided 1x1 conv + BN, and the classifier ``fc``. That is
:class:`~paddleseg_ext.models.backbones.ResNet_vd` built with ``stem: 7x7`` and
``shortcut: strided_conv`` (plus ``identity_shortcut: True`` for ResNet18/34,
whose ``layer1.0`` has no ``downsample``), so the file initialises that backbone
through ``pretrained:`` with every tensor placed:

=================================  ==========================================
torchvision                        paddleseg_ext (backbone)
=================================  ==========================================
``conv1`` / ``bn1``                ``conv1`` conv / BN
``layer<s>.<i>.conv<j>/bn<j>``     ``bb_<s-1>_<i>.conv<j-1>``
``layer<s>.<i>.downsample.0/1``    ``bb_<s-1>_<i>.short``
``fc.weight``, ``fc.bias``         not loaded (the ImageNet classifier), reported
=================================  ==========================================

The stages' dilation (``output_stride``) is the user's choice, as when any
ImageNet backbone is dilated for segmentation. BatchNorm step counters
(``num_batches_tracked``, in files saved by torchvision >= 0.4) are reported as
not loaded. ``tests/test_peer_semseg.py`` checks, in ``.venv-peers``, that the
backbone's features equal torchvision's own model's.
"""

from __future__ import annotations

import re
from typing import Dict, Sequence

import numpy as np

from .base import Conversion, TensorMover, register_adapter

__all__ = ["LAYOUT", "BACKBONE_SWITCHES", "move_resnet_blocks", "convert_imagenet_resnet"]

State = Dict[str, np.ndarray]
LAYOUT = "torchvision ImageNet ResNet"
#: The ResNet_vd switches that torchvision's ResNet needs.
BACKBONE_SWITCHES = {"stem": "7x7", "shortcut": "strided_conv"}
_CLASSIFIER = ("fc.weight", "fc.bias")
_CLASSIFIER_REASON = "ImageNet classifier tensors (fc, not part of the backbone)"
_HINT = ("Build the backbone with " + ", ".join(f"{k}: {v}" for k, v in BACKBONE_SWITCHES.items())
         + " (and identity_shortcut: True for ResNet18/34) to initialise it from a torchvision "
         "ResNet file")


def move_resnet_blocks(m: TensorMover, peer: str, ours: str) -> None:
    """Move torchvision-style residual blocks ``<peer>layer<s>.<i>.{conv,bn}<j>`` and
    ``.downsample.{0,1}`` to our ``<ours>bb_<s-1>_<i>.conv<j-1>`` / ``.short`` (semseg's
    ResNet names its blocks as torchvision does)."""
    pattern = re.compile(re.escape(peer) + r"layer([1-4])\.(\d+)\.")
    blocks = sorted({(int(b.group(1)), int(b.group(2))) for b in map(pattern.match, m.src) if b})
    for stage, i in blocks:  # layer<stage>.<i> is our bb_<stage - 1>_<i>
        src, dst = f"{peer}layer{stage}.{i}", f"{ours}bb_{stage - 1}_{i}"
        for j in range(3):  # conv1..3 (a basic block has two)
            m.conv_bn(f"{src}.conv{j + 1}", f"{src}.bn{j + 1}", f"{dst}.conv{j}")
        m.conv_bn(f"{src}.downsample.0", f"{src}.downsample.1", f"{dst}.short")


def _is_resnet_vd(model: object) -> bool:
    from paddleseg_ext.models.backbones.resnet_vd import ResNet_vd  # late: models import loaders

    return isinstance(model, ResNet_vd)


def _detect(keys: Sequence[str], model: object) -> bool:
    names = set(keys)
    return (_is_resnet_vd(model) and {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                                      "fc.weight"} <= names)


def convert_imagenet_resnet(state: State, model: object, layout: str, prefix: str,
                            classifier: Sequence[str], reason: str, peer: str, hint: str) -> Conversion:
    """An ImageNet ResNet with torchvision's names under ``prefix`` (``conv1`` / ``bn1``,
    ``layer<s>.<i>``) -> our 7x7-stem ``ResNet_vd``; the ``classifier`` keys are reported as
    not loaded (``reason``). A backbone without :data:`BACKBONE_SWITCHES` is refused (the
    tensors would fit another function), naming ``peer``'s values and ``hint``."""
    wrong = [f"{k}={getattr(model, k)!r} ({peer}: {v!r})"
             for k, v in BACKBONE_SWITCHES.items() if getattr(model, k) != v]
    if wrong:
        raise ValueError(f"detected a {layout} file, but this ResNet{model.depth}_vd is built with "
                         f"{', '.join(wrong)}: the tensors would fit a different function. {hint}")
    m = TensorMover(state)
    m.conv_bn(f"{prefix}conv1", f"{prefix}bn1", "conv1")
    move_resnet_blocks(m, prefix, "")
    conv = m.finish(layout, hint)
    found = [k for k in classifier if k in m.src]
    for key in found:
        m.src.pop(key)
    conv.unplaced = sorted(m.src)
    if found:
        conv.not_loaded[reason] = found
    return conv


def _convert(state: State, model: object) -> Conversion:
    return convert_imagenet_resnet(state, model, LAYOUT, "", _CLASSIFIER, _CLASSIFIER_REASON,
                                   "torchvision", _HINT)


register_adapter("torchvision.resnet", _detect, _convert)
