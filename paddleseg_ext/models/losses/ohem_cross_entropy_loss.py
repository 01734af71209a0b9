"""Online hard example mining cross entropy."""

from __future__ import annotations

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs import manager

from ._utils import pixel_nll, prepare


@manager.LOSSES.register
class OhemCrossEntropyLoss(nn.Layer):
    """Cross entropy averaged over hard pixels only (OHEM).

    After Shrivastava et al., "Training Region-based Object Detectors with
    Online Hard Example Mining", CVPR 2016 (https://arxiv.org/abs/1604.03540),
    in the pixel form used by PSANet/OCRNet: a valid pixel is hard when the
    softmax probability of its true class is below ``thresh``. If fewer than
    ``min_kept`` pixels are hard, the ``min_kept`` lowest-probability valid
    pixels are used instead (all valid pixels if there are fewer). The loss is
    the plain mean of ``-log p`` over the kept pixels; 0 if none are valid.

    Args:
        thresh: probability threshold in (0, 1].
        min_kept: minimum number of pixels kept per batch (>= 0).
        ignore_index: label value to ignore.

    Shape:
        logit: ``[N, C, H, W]``; label: ``[N, H, W]`` int64 -> scalar.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 10000,
                 ignore_index: int = 255) -> None:
        super().__init__()
        if not 0.0 < float(thresh) <= 1.0:
            raise ValueError(f"OhemCrossEntropyLoss: thresh must be in (0, 1], got {thresh!r}")
        if not isinstance(min_kept, int) or isinstance(min_kept, bool) or min_kept < 0:
            raise ValueError("OhemCrossEntropyLoss: min_kept must be an int >= 0, got "
                             f"{min_kept!r}")
        self.thresh = float(thresh)
        self.min_kept = min_kept
        self.ignore_index = int(ignore_index)

    def forward(self, logit: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        logit, label, valid = prepare(logit, label, self.ignore_index, "OhemCrossEntropyLoss")
        nll = pixel_nll(logit, label)
        nll_valid = paddle.masked_select(nll, valid)
        n_valid = int(nll_valid.shape[0])
        if n_valid == 0:
            return nll.sum() * 0.0
        prob = paddle.exp(-nll_valid.detach())
        order = paddle.argsort(prob)  # hardest (lowest probability) first
        n_hard = int((prob < self.thresh).sum())
        k = max(n_hard, min(self.min_kept, n_valid))
        if k == 0:  # min_kept == 0 and nothing below thresh
            return nll.sum() * 0.0
        return paddle.gather(nll_valid, order[:k]).mean()
