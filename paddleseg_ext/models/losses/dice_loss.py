"""Soft Dice loss over softmax probabilities."""

from __future__ import annotations

from typing import Optional, Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.models.layers.softmax import channel_softmax

from ._utils import check_weight, class_weights, prepare


@manager.LOSSES.register
class DiceLoss(nn.Layer):
    """Soft Dice loss, averaged over classes.

    After Milletari et al., "V-Net", 3DV 2016 (https://arxiv.org/abs/1606.04797).
    With softmax probabilities p and one-hot targets g, summed over all valid
    pixels of the batch, per class c::

        L_c = 1 - (2 * sum(p_c * g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)

    and the loss is ``sum_c w_c L_c / sum_c w_c`` (plain mean without weights).
    Ignored pixels are excluded from every sum.

    Args:
        weight: per-class weights, length C, or None.
        ignore_index: label value to ignore.
        smooth: additive smoothing (> 0 keeps absent classes finite).

    Shape:
        logit: ``[N, C, H, W]``; label: ``[N, H, W]`` int64 -> scalar.
    """

    def __init__(self, weight: Optional[Sequence[float]] = None, ignore_index: int = 255,
                 smooth: float = 1.0) -> None:
        super().__init__()
        self.weight = check_weight(weight, "DiceLoss")
        if float(smooth) < 0:
            raise ValueError(f"DiceLoss: smooth must be >= 0, got {smooth!r}")
        if self.weight is not None and sum(self.weight) <= 0:
            raise ValueError(f"DiceLoss: weight must not sum to 0, got {weight!r}")
        self.ignore_index = int(ignore_index)
        self.smooth = float(smooth)

    def forward(self, logit: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        logit, label, valid = prepare(logit, label, self.ignore_index, "DiceLoss")
        num_classes = logit.shape[1]
        mask = valid.astype(logit.dtype).unsqueeze(1)  # [N,1,H,W]
        prob = channel_softmax(logit) * mask
        onehot = F.one_hot(label, num_classes).transpose([0, 3, 1, 2]).astype(logit.dtype) * mask
        dims = [0, 2, 3]
        inter = (prob * onehot).sum(axis=dims)
        card = prob.sum(axis=dims) + onehot.sum(axis=dims)
        per_class = 1.0 - (2.0 * inter + self.smooth) / paddle.clip(card + self.smooth, min=1e-12)
        if self.weight is None:
            return per_class.mean()
        w = class_weights(self.weight, num_classes, "DiceLoss")
        return (per_class * w).sum() / w.sum()
