"""Pixel-wise softmax cross entropy with ignore, class weights and top-k mining."""

from __future__ import annotations

from typing import Optional, Sequence

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs import manager

from ._utils import check_weight, class_weights, pixel_nll, prepare


@manager.LOSSES.register
class CrossEntropyLoss(nn.Layer):
    """Softmax cross entropy over pixels.

    Per valid pixel i with label y_i the loss is ``l_i = w[y_i] * -log p_i[y_i]``
    (``w`` = 1 without class weights); ignored pixels contribute nothing.

    * ``avg_non_ignore=True``: ``sum(l) / sum(w[y_i])`` over valid pixels (the
      weighted mean PyTorch uses).
    * ``avg_non_ignore=False``: ``sum(l) / (N*H*W)``, ignored pixels counting
      as zeros (PaddleSeg's legacy behaviour).
    * ``top_k_percent_pixels < 1``: only the ``max(1, int(k * #valid))`` valid
      pixels with the largest ``l_i`` are averaged, ``sum(l) / sum(w)`` over
      them (online bootstrapping, Wu et al., "Bridging Category-level and
      Instance-level Semantic Image Segmentation", https://arxiv.org/abs/1605.06885,
      as used by DeepLab).

    If every pixel is ignored the loss is 0 (with a zero gradient), not NaN.

    Args:
        weight: per-class weights, length C, or None.
        ignore_index: label value to ignore.
        top_k_percent_pixels: fraction in (0, 1] of hardest pixels kept.
        data_format: layout of the logit, ``"NCHW"`` or ``"NHWC"``.
        avg_non_ignore: average over non-ignored pixels only.

    Shape:
        logit: ``[N, C, H, W]``; label: ``[N, H, W]`` int64 -> scalar.
    """

    def __init__(self, weight: Optional[Sequence[float]] = None, ignore_index: int = 255,
                 top_k_percent_pixels: float = 1.0, data_format: str = "NCHW",
                 avg_non_ignore: bool = True) -> None:
        super().__init__()
        self.weight = check_weight(weight, "CrossEntropyLoss")
        if not 0.0 < float(top_k_percent_pixels) <= 1.0:
            raise ValueError("CrossEntropyLoss: top_k_percent_pixels must be in (0, 1], got "
                             f"{top_k_percent_pixels!r}")
        if data_format not in ("NCHW", "NHWC"):
            raise ValueError("CrossEntropyLoss: data_format must be 'NCHW' or 'NHWC', got "
                             f"{data_format!r}")
        self.ignore_index = int(ignore_index)
        self.top_k_percent_pixels = float(top_k_percent_pixels)
        self.data_format = data_format
        self.avg_non_ignore = bool(avg_non_ignore)

    def forward(self, logit: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        logit, label, valid = prepare(logit, label, self.ignore_index, "CrossEntropyLoss",
                                      self.data_format)
        nll = pixel_nll(logit, label)
        validf = valid.astype(nll.dtype)
        if self.weight is not None:
            w = class_weights(self.weight, logit.shape[1], "CrossEntropyLoss")
            coef = paddle.gather(w, label.flatten()).reshape(label.shape) * validf
        else:
            coef = validf
        loss = nll * coef

        if self.top_k_percent_pixels < 1.0:
            n_valid = int(valid.sum())
            if n_valid == 0:
                return loss.sum() * 0.0
            k = max(1, int(self.top_k_percent_pixels * n_valid))
            # Ignored pixels get -1 (< any valid loss) so they are never picked.
            ranked = paddle.where(valid, loss, paddle.full_like(loss, -1.0)).flatten()
            _, idx = paddle.topk(ranked.detach(), k)
            num = paddle.gather(loss.flatten(), idx).sum()
            den = paddle.gather(coef.flatten(), idx).sum()
        elif self.avg_non_ignore:
            num, den = loss.sum(), coef.sum()
        else:
            num, den = loss.sum(), paddle.to_tensor(float(loss.numel()), dtype=loss.dtype)
        # den == 0 only if nothing (weighted) is valid: then num == 0 too -> 0.
        return num / paddle.clip(den, min=1e-12)
