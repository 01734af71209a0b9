"""A convolution of bilinearly upsampled tiny maps, computed at the tiny size.

PSPNet's pyramid pooling upsamples each pooled ``b x b`` branch (b = 1, 2, 3,
6) to the feature map's ``H x W`` and feeds the concatenation to a 3x3
convolution. Half of that convolution's input channels are the upsampled
branches, and they carry almost no information: bilinear upsampling is a
linear map ``u = R_H p R_W^T`` (``R_H``: ``H x b``), and so is a stride-1
zero-padded convolution. For one kernel tap ``(dy, dx)`` the shifted
upsampled map is ``(S_dy R_H) p (S_dx R_W)^T``, so

    conv(u)[o] = sum_dy A_dy ( sum_dx (W_{dy,dx} p) B_dx^T )

with ``A_dy = S_dy R_H`` (``R_H``'s rows shifted by the tap, zero rows where
the tap reads the padding) and ``B_dx`` likewise. ``W_{dy,dx} p`` is a
product at the ``b x b`` size; the two interpolation products then cost
``kh * sum(b)`` multiply-adds per output value (36 for 3x3 and bins 1, 2, 3,
6) instead of ``kh * kw * C_branch`` (18432 at PSPNet-R50's 512 x 4). The
result equals the convolution of the upsampled maps up to float rounding.

The interpolation matrices reproduce ``paddle.nn.functional.interpolate``'s
bilinear sampling (``align_mode=0``: half-pixel centres clamped at 0, or
``align_corners``) and are built once per size in float64.
"""

from __future__ import annotations

import functools
from typing import Sequence, Tuple

import numpy as np
import paddle

from paddleseg_ext.cvlibs.validators import POSITIVE_INT

__all__ = ["bilinear_matrix", "conv_of_upsampled"]


@functools.lru_cache(maxsize=256)
def _bilinear_matrix(out_size: int, in_size: int, align_corners: bool) -> np.ndarray:
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    # As Paddle's kernel: a 1-pixel output samples the first input pixel (ratio 0).
    if out_size == 1:
        src = np.zeros(1)
    elif align_corners:
        src = np.arange(out_size) * ((in_size - 1) / (out_size - 1))
    else:
        src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    rows = np.arange(out_size)
    np.add.at(mat, (rows, i0), 1.0 - frac)
    np.add.at(mat, (rows, i1), frac)
    mat.setflags(write=False)
    return mat


def bilinear_matrix(out_size: int, in_size: int, align_corners: bool = False) -> np.ndarray:
    """``R`` (``[out_size, in_size]``, float64) with ``R @ v`` = bilinear resize of ``v``.

    Matches ``F.interpolate(mode="bilinear", align_mode=0)`` along one axis,
    including Paddle's choice of the first input pixel for a 1-pixel output.
    Read-only and cached: copy before modifying.
    """
    POSITIVE_INT("bilinear_matrix", "out_size", out_size)
    POSITIVE_INT("bilinear_matrix", "in_size", in_size)
    return _bilinear_matrix(out_size, in_size, bool(align_corners))


@functools.lru_cache(maxsize=256)
def _tap_matrix(out_size: int, in_size: int, align_corners: bool, taps: int, dilation: int,
                padding: int) -> np.ndarray:
    # [out_size, taps * in_size]: block t holds R's rows shifted by tap t (zero rows off the map).
    r = _bilinear_matrix(out_size, in_size, align_corners)
    mat = np.zeros((out_size, taps * in_size), dtype=np.float64)
    for t in range(taps):
        src = np.arange(out_size) + t * dilation - padding
        ok = (src >= 0) & (src < out_size)
        mat[ok, t * in_size:(t + 1) * in_size] = r[src[ok]]
    return mat


def _tensor(mat: np.ndarray, dtype) -> paddle.Tensor:
    return paddle.to_tensor(mat.astype(np.float32)).astype(dtype)


def conv_of_upsampled(maps: Sequence[paddle.Tensor], weights: Sequence[paddle.Tensor],
                      size: Tuple[int, int], align_corners: bool = False,
                      padding: Tuple[int, int] = (1, 1),
                      dilation: Tuple[int, int] = (1, 1)) -> paddle.Tensor:
    """``sum_k conv2d(resize(maps[k], size), weights[k])`` without the full-size resize.

    Stride-1 zero-padded convolutions, no bias (add it once to the result).
    Works in dygraph with gradients (every step is a differentiable matmul);
    the sizes must be ints.

    Args:
        maps: ``[N, C_k, h_k, w_k]`` tensors (any small sizes).
        weights: ``[C_out, C_k, kh, kw]`` per map, the same ``C_out``, ``kh``, ``kw``.
        size: output ``(H, W)``, the size each map is bilinearly resized to.
        align_corners: of the bilinear resize.
        padding: ``(pad_h, pad_w)`` zero padding of the convolution, each side.
        dilation: ``(dil_h, dil_w)`` of the convolution.

    Returns:
        ``[N, C_out, H, W]``, equal to the convolutions of the resized maps
        summed, up to float rounding.
    """
    if not maps or len(maps) != len(weights):
        raise ValueError(f"conv_of_upsampled: need one weight per map, got {len(maps)} maps "
                         f"and {len(weights)} weights")
    height, width = (int(s) for s in size)
    (pad_h, pad_w), (dil_h, dil_w) = padding, dilation
    c_out, _, kh, kw = (int(s) for s in weights[0].shape)
    if height + 2 * pad_h - dil_h * (kh - 1) != height or \
            width + 2 * pad_w - dil_w * (kw - 1) != width:
        raise ValueError("conv_of_upsampled: the convolution must keep the size "
                         f"(kernel {kh}x{kw}, padding {padding}, dilation {dilation})")
    rows, row_mats = [], []
    for p, w in zip(maps, weights):
        n, c, h, wd = (int(s) for s in p.shape)
        if tuple(int(s) for s in w.shape) != (c_out, c, kh, kw):
            raise ValueError(f"conv_of_upsampled: weight {list(w.shape)} does not match map "
                             f"{list(p.shape)} and [{c_out}, C, {kh}, {kw}]")
        # z[n, (dy, dx, o), (a, b)] = sum_c W[o, c, dy, dx] p[n, c, a, b]
        z = paddle.matmul(w.transpose([2, 3, 0, 1]).reshape([kh * kw * c_out, c]),
                          p.reshape([n, c, h * wd]))
        z = z.reshape([n, kh, kw, c_out, h, wd]).transpose([0, 1, 3, 4, 2, 5])
        b_cat = _tensor(_tap_matrix(width, wd, align_corners, kw, dil_w, pad_w), p.dtype)
        # sum over (dx, b): [n, (dy, o, a), W]
        y = paddle.matmul(z.reshape([n, kh * c_out * h, kw * wd]), b_cat, transpose_y=True)
        rows.append(y.reshape([n, kh, c_out, h, width]).transpose([0, 2, 1, 3, 4])
                    .reshape([n, c_out, kh * h, width]))
        row_mats.append(_tap_matrix(height, h, align_corners, kh, dil_h, pad_h))
    y = rows[0] if len(rows) == 1 else paddle.concat(rows, axis=2)
    a_cat = _tensor(np.concatenate(row_mats, axis=1), y.dtype)
    # sum over (dy, a) of every map at once: [H, S] @ [n, C_out, S, W]
    return paddle.matmul(a_cat, y)
