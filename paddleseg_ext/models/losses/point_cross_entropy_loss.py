"""Cross entropy on PointRend's point predictions."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.models.layers.point_geometry import point_sample_nearest

from .cross_entropy_loss import CrossEntropyLoss


@manager.LOSSES.register
class PointCrossEntropyLoss(nn.Layer):
    """Softmax cross entropy of point logits against labels read at the points.

    The loss of PointRend's point head (Kirillov et al., "PointRend: Image
    Segmentation as Rendering", CVPR 2020, https://arxiv.org/abs/1912.08193,
    Sec. 3.1): the model's training output ``(point_logits, points)`` is
    compared with the full-resolution label read at each point (nearest
    pixel, :func:`~paddleseg_ext.models.layers.point_geometry.point_sample_nearest`).
    Points on ``ignore_index`` pixels are ignored; the rest is
    :class:`CrossEntropyLoss` over the points (mean over valid points by
    default; 0 if none is valid).

    Args:
        weight: per-class weights, length K, or None.
        ignore_index: label value to ignore.
        avg_non_ignore: average over non-ignored points only (otherwise over
            all points, ignored ones counting as 0).

    Shape:
        logit: tuple ``(point_logits [N, K, P], points [N, P, 2])``;
        label: ``[N, H, W]`` (or ``[N, 1, H, W]``) int -> scalar.
    """

    def __init__(self, weight: Optional[Sequence[float]] = None, ignore_index: int = 255,
                 avg_non_ignore: bool = True) -> None:
        super().__init__()
        self.ce = CrossEntropyLoss(weight=weight, ignore_index=ignore_index,
                                   avg_non_ignore=avg_non_ignore)
        self.ignore_index = int(ignore_index)

    def forward(self, logit: Tuple[paddle.Tensor, paddle.Tensor],
                label: paddle.Tensor) -> paddle.Tensor:
        if not isinstance(logit, (tuple, list)) or len(logit) != 2:
            raise ValueError("PointCrossEntropyLoss: expects the model output (point_logits, points) "
                             f"of PointRend, got {type(logit).__name__}; put it second in "
                             "loss.types, matching PointRend's output_names ('seg', 'point')")
        point_logits, points = logit
        if point_logits.ndim != 3 or points.ndim != 3 or points.shape[-1] != 2 \
                or point_logits.shape[2] != points.shape[1]:
            raise ValueError("PointCrossEntropyLoss: point_logits must be [N, K, P] and points "
                             f"[N, P, 2], got {list(point_logits.shape)} and {list(points.shape)}")
        if label.ndim == 4 and label.shape[1] == 1:
            label = label.squeeze(1)
        if label.ndim != 3:
            raise ValueError(f"PointCrossEntropyLoss: label must be [N, H, W], got {list(label.shape)}")
        point_label = point_sample_nearest(label, points)  # [N, P]
        # Points as a P x 1 "image": reuse CrossEntropyLoss (checks, weights, ignore).
        return self.ce(point_logits.unsqueeze(-1), point_label.unsqueeze(-1))
