"""Convolution forms: Winograd F(2x2, 3x3) and memory-bounded row strips.

**Winograd** (train and infer, ``policy.winograd``): on the CPU in dygraph, a 3x3, stride-1,
"same" padded (padding = dilation), ungrouped convolution with at least
:data:`WINOGRAD_MIN_CHANNELS` input and output channels runs as Winograd F(2x2, 3x3)
(:mod:`paddleseg_ext.ops.winograd`; 2.25x fewer multiplications, equal to ``F.conv2d``
within float rounding). Traced programs never get it (export and onnx targets).

**Row strips** (infer, ``policy.conv_budget_bytes``): Paddle's CPU ``conv2d`` lowers a
``k > 1`` (or strided) convolution to im2col + GEMM and allocates, per image, a column
buffer of ``C_in / groups * kh * kw * H_out * W_out`` elements. At large inputs that
buffer, not the activations, bounds the image size a model can infer: for PSANet's
``ConvBNReLU(4096, 512, 3)`` head on the os8 map of a 4096x4096 image it is 36 GiB
(docs/benchmarks.md, "Fused PSA attention"). :func:`strip_conv2d` splits such a convolution
into horizontal strips of output rows. Output rows ``[r0, r1)`` of a convolution with stride
``s``, dilation ``d``, kernel height ``kh`` and top padding ``p`` read the input rows
``[r0*s - p, (r1-1)*s + d*(kh-1) + 1 - p)``; the part of that halo outside ``[0, H)`` is
exactly the zero padding, so each strip is the same convolution of the sliced input with the
strip's own top/bottom padding. Every output pixel is the same dot product as in the whole
convolution; only the GEMM blocking (and so float rounding) may differ.

:class:`FastConv2D` is the form of ``nn.Conv2D`` that does both; the ``conv`` rewrite
(:mod:`paddleseg_ext.runtime.forms`) turns every zero-padded NCHW convolution into it.
"""


from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["FastConv2D", "strip_conv2d", "conv2d", "winograd_eligible", "WINOGRAD_MIN_CHANNELS",
           "conv2d_over_concat", "explicit_padding", "strip_stats"]

#: Counters for tests and probes: convolutions run in strips and strips run.
strip_stats = {"tiled_calls": 0, "strips": 0}

#: Fewer channels than this and the tile transforms cost more than the GEMMs save
#: (docs/benchmarks.md, "Winograd F(2x2, 3x3)").
WINOGRAD_MIN_CHANNELS = 64


def winograd_eligible(weight_shape: Sequence[int], stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int], groups: int) -> bool:
    """Whether a convolution of this geometry has a Winograd F(2x2, 3x3) form here: 3x3,
    stride 1, padding = dilation on every side, ungrouped, at least
    :data:`WINOGRAD_MIN_CHANNELS` input and output channels."""
    if groups != 1 or list(weight_shape[2:]) != [3, 3] or [int(s) for s in stride] != [1, 1]:
        return False
    d = int(dilation[0])
    if int(dilation[1]) != d or any(int(p) != d for p in padding):
        return False
    return min(int(weight_shape[0]), int(weight_shape[1])) >= WINOGRAD_MIN_CHANNELS


def conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor],
           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
           groups: int, winograd: bool = False) -> paddle.Tensor:
    """``F.conv2d`` (NCHW, ``padding`` as ``(top, bottom, left, right)``); as Winograd
    F(2x2, 3x3) when ``winograd`` is asked, the geometry is :func:`winograd_eligible` and
    ``x`` is a float32/float64 CPU tensor (the op has CPU kernels only)."""
    if (winograd and x.dtype in (paddle.float32, paddle.float64) and x.place.is_cpu_place()
            and winograd_eligible(weight.shape, stride, padding, dilation, groups)):
        from paddleseg_ext.ops.winograd import winograd_conv3x3

        return winograd_conv3x3(x, weight, bias, int(dilation[0]))
    return F.conv2d(x, weight, bias, stride=list(stride), padding=list(padding),
                    dilation=list(dilation), groups=groups)


def _out_size(size: int, k: int, s: int, d: int, p0: int, p1: int) -> int:
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def strip_conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor],
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int, budget_bytes: int = 0, winograd: bool = False) -> paddle.Tensor:
    """``F.conv2d`` (NCHW, zero padding) in output-row strips whose im2col fits the budget.

    Args:
        x: ``[N, C_in, H, W]``.
        weight: ``[C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        stride: ``(sh, sw)``.
        padding: ``(top, bottom, left, right)``.
        dilation: ``(dh, dw)``.
        groups: convolution groups.
        budget_bytes: column-buffer budget (0: one strip, the whole convolution).
        winograd: run eligible whole convolutions as Winograd (:func:`conv2d`).

    Returns:
        ``[N, C_out, H_out, W_out]``, equal to the whole convolution up to float rounding.
    """
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, padding
    kh, kw = int(weight.shape[2]), int(weight.shape[3])
    h, w = int(x.shape[2]), int(x.shape[3])
    h_out = _out_size(h, kh, sh, dh, top, bottom)
    w_out = _out_size(w, kw, sw, dw, left, right)
    plain_padding = [top, bottom, left, right]
    # A 1x1 stride-1 unpadded conv is a plain GEMM in Paddle: no column buffer.
    needs_cols = kh * kw > 1 or sh * sw > 1 or any(plain_padding)
    row_bytes = int(weight.shape[1]) * kh * kw * w_out * x.element_size()
    if not needs_cols or budget_bytes <= 0 or h_out <= 1 or row_bytes * h_out <= budget_bytes:
        return conv2d(x, weight, bias, [sh, sw], plain_padding, [dh, dw], groups, winograd)
    rows = max(1, budget_bytes // row_bytes)
    outs: List[paddle.Tensor] = []
    for r0 in range(0, h_out, rows):
        r1 = min(h_out, r0 + rows)
        lo = r0 * sh - top  # first input row (may be in the top padding)
        hi = (r1 - 1) * sh + dh * (kh - 1) + 1 - top  # one past the last
        lo_c, hi_c = max(lo, 0), min(hi, h)
        pad = [lo_c - lo, hi - hi_c, left, right]
        if hi_c > lo_c:
            part = x[:, :, lo_c:hi_c]
        else:  # the strip reads padding only (padding > the kernel's reach)
            part = paddle.zeros([x.shape[0], x.shape[1], hi - lo, w], dtype=x.dtype)
            pad = [0, 0, left, right]
        outs.append(F.conv2d(part, weight, bias, stride=[sh, sw], padding=pad,
                             dilation=[dh, dw], groups=groups))
        strip_stats["strips"] += 1
    strip_stats["tiled_calls"] += 1
    return paddle.concat(outs, axis=2)


def explicit_padding(conv: nn.Conv2D) -> Optional[Tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of a zero-padded NCHW conv, else None."""
    if (conv._padding_mode != "zeros" or conv._data_format != "NCHW"
            or conv._padding_algorithm != "EXPLICIT"):
        return None
    pad = [int(p) for p in conv._updated_padding]
    if len(pad) == 2:
        return pad[0], pad[0], pad[1], pad[1]
    if len(pad) == 4:
        return pad[0], pad[1], pad[2], pad[3]
    return None


class FastConv2D(nn.Conv2D):
    """The form of :class:`paddle.nn.Conv2D` that runs as Winograd and/or in row strips.

    Same parameters and results as ``nn.Conv2D`` (up to float rounding). Set by the ``conv``
    rewrite on zero-padded NCHW convolutions only (:attr:`pad4` is their explicit
    padding).

    Attributes:
        winograd: run an eligible convolution as Winograd F(2x2, 3x3) on the CPU.
        budget_bytes: im2col budget above which the convolution runs in row strips
            (inference only: 0 in training).
        pad4: ``(top, bottom, left, right)``.
    """

    plain_class = nn.Conv2D
    form_attributes = ("winograd", "budget_bytes", "pad4")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return strip_conv2d(x, self.weight, self.bias, self._stride, self.pad4,
                            self._dilation, self._groups, self.budget_bytes, self.winograd)


def conv2d_over_concat(conv: nn.Conv2D, parts: Sequence[paddle.Tensor],
                       budget_bytes: int = 0, winograd: bool = False) -> paddle.Tensor:
    """``conv(paddle.concat(parts, axis=1))`` without materialising the concat.

    A convolution is linear in its input channels, so with the weight split along them,
    ``conv(concat(a, b)) = conv_a(a) + conv_b(b)`` (bias once). For inference: the sum is
    accumulated in place. Grouped or non-zero-padded convolutions concatenate.

    Args:
        conv: an ``nn.Conv2D`` with ``groups == 1``.
        parts: NCHW tensors whose channels add up to ``conv``'s input channels.
        budget_bytes, winograd: as :func:`strip_conv2d`.

    Returns:
        The convolution's output.
    """
    pad = explicit_padding(conv)
    if pad is None or conv._groups != 1 or len(parts) < 2:
        return conv(paddle.concat(list(parts), axis=1))
    total = sum(int(p.shape[1]) for p in parts)
    if total != int(conv.weight.shape[1]):
        raise ValueError(f"conv2d_over_concat: parts have {total} channels, the conv expects "
                         f"{int(conv.weight.shape[1])}")
    out = None
    c0 = 0
    for i, part in enumerate(parts):
        c1 = c0 + int(part.shape[1])
        y = strip_conv2d(part, conv.weight[:, c0:c1], conv.bias if i == 0 else None,
                         conv._stride, pad, conv._dilation, 1, budget_bytes, winograd)
        out = y if out is None else out.add_(y)
        del y
        c0 = c1
    return out
