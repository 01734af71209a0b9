"""Softmax over the channel axis, laid out for Paddle's fast kernel."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F


def channel_softmax(x: paddle.Tensor) -> paddle.Tensor:
    """``softmax(x, axis=1)`` for a 3-D or 4-D tensor, computed on the last axis.

    Paddle 3.3's CPU softmax is fast along the last axis only: on axis 1 it
    takes 2x (2x19x512x512 logits) to 5x (1x2048x32x64, PSANet's attention)
    as long, forward and backward, as moving the axis last, taking the softmax
    there and moving it back. The values are the same up to float rounding.

    Args:
        x: ``[N, C, L]`` or ``[N, C, H, W]``.

    Returns:
        Tensor of ``x``'s shape whose entries sum to 1 over axis 1.
    """
    if x.ndim == 3:
        return F.softmax(x.transpose([0, 2, 1]), axis=-1).transpose([0, 2, 1])
    if x.ndim == 4:
        return F.softmax(x.transpose([0, 2, 3, 1]), axis=-1).transpose([0, 3, 1, 2])
    raise ValueError(f"channel_softmax expects a 3-D or 4-D tensor, got shape {list(x.shape)}")
