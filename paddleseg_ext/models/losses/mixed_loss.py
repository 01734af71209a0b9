"""Weighted sum of several losses applied to the same logits."""

from __future__ import annotations

from typing import Sequence

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs import manager


@manager.LOSSES.register
class MixedLoss(nn.Layer):
    """``sum_i coef[i] * losses[i](logit, label)``.

    Combining region and pixel losses (e.g. CE + Dice) is common practice in
    PaddleSeg recipes; see e.g. Taghanaki et al., "Combo loss", 2019
    (https://arxiv.org/abs/1805.02798).

    Args:
        losses: already-built loss layers (each with an ``ignore_index``).
        coef: one weight per loss.

    Shape:
        logit: ``[N, C, H, W]``; label: ``[N, H, W]`` int64 -> scalar.
    """

    def __init__(self, losses: Sequence[nn.Layer], coef: Sequence[float]) -> None:
        super().__init__()
        if not isinstance(losses, (list, tuple)) or not losses:
            raise ValueError("MixedLoss: losses must be a non-empty list of loss layers, got "
                             f"{losses!r}")
        for i, loss in enumerate(losses):
            if not isinstance(loss, nn.Layer):
                raise ValueError(f"MixedLoss: losses[{i}] must be a built loss layer, got "
                                 f"{type(loss).__name__}: {loss!r}")
        if not isinstance(coef, (list, tuple)) or len(coef) != len(losses):
            raise ValueError(f"MixedLoss: coef must be a list with one number per loss "
                             f"({len(losses)}), got {coef!r}")
        ignores = {getattr(loss, "ignore_index", None) for loss in losses} - {None}
        if len(ignores) > 1:
            raise ValueError(f"MixedLoss: the losses disagree on ignore_index: {sorted(ignores)}")
        self.losses = nn.LayerList(list(losses))
        self.coef = [float(c) for c in coef]
        self.ignore_index = ignores.pop() if ignores else 255

    def forward(self, logit: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        total = None
        for c, loss in zip(self.coef, self.losses):
            term = c * loss(logit, label)
            total = term if total is None else total + term
        return total
