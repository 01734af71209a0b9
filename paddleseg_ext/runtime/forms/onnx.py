"""Adaptive average pooling as two matmuls: the form paddle2onnx converts at any input size.

paddle2onnx converts Paddle's adaptive ``pool2d`` only for a static input shape; PSPNet's
pyramid pooling must take any image size. Adaptive average pooling along one axis is a
``[bins, L]`` matrix of ``1/size`` inside each bin (Paddle's and PyTorch's bins
``[floor(i*L/b), ceil((i+1)*L/b))``), so the pooled map is ``R x C^T`` with ops paddle2onnx
converts with dynamic sizes (``arange``, comparisons, ``matmul``). Same values up to float
rounding.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import paddle
import paddle.nn as nn

__all__ = ["MatmulAdaptiveAvgPool2D", "matmul_pool_size"]


def _bin_matrix(length: paddle.Tensor, bins: int, dtype: Any) -> paddle.Tensor:
    """``[bins, length]`` averaging weights of adaptive average pooling along one axis."""
    i = paddle.arange(bins, dtype="int64")
    start = paddle.floor_divide(i * length, paddle.full([1], bins, "int64"))
    end = paddle.floor_divide((i + 1) * length + (bins - 1), paddle.full([1], bins, "int64"))
    pos = paddle.arange(length, dtype="int64")
    inside = (pos.unsqueeze(0) >= start.unsqueeze(1)) & (pos.unsqueeze(0) < end.unsqueeze(1))
    return inside.astype(dtype) / (end - start).astype(dtype).unsqueeze(1)


def matmul_pool_size(layer: nn.AdaptiveAvgPool2D) -> Optional[Tuple[int, int]]:
    """``(bh, bw)`` of an NCHW adaptive pool with both sizes given, else None."""
    if getattr(layer, "_data_format", "NCHW") != "NCHW":
        return None
    size = getattr(layer, "_output_size", None)
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    if len(size) != 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in size):
        return None  # None entries (keep that axis): left to paddle2onnx
    return size


class MatmulAdaptiveAvgPool2D(nn.AdaptiveAvgPool2D):
    """Form of ``nn.AdaptiveAvgPool2D`` (NCHW, both sizes given) as two matmuls.

    Attributes:
        bins: ``(bh, bw)``.
    """

    plain_class = nn.AdaptiveAvgPool2D
    form_attributes = ("bins",)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shape = paddle.shape(x).astype("int64")
        rows = _bin_matrix(shape[2], self.bins[0], x.dtype)  # [bh, H]
        cols = _bin_matrix(shape[3], self.bins[1], x.dtype)  # [bw, W]
        return paddle.matmul(paddle.matmul(rows, x), cols, transpose_y=True)  # [N, C, bh, bw]
