"""Memory-bounded inference convolution: output-row strips under a buffer budget.

Paddle's CPU ``conv2d`` kernel lowers a ``k > 1`` (or strided) convolution to
im2col + GEMM and allocates, per image, a column buffer of
``C_in / groups * kh * kw * H_out * W_out`` elements. At large inputs that
buffer, not the activations, bounds the image size a model can infer: for
PSANet's ``ConvBNReLU(4096, 512, 3)`` head on the os8 map of a 4096x4096 image
it is 36 GiB (docs/benchmarks.md, "Fused PSA attention (issue 12)").

:class:`StripConv2D` is a drop-in :class:`paddle.nn.Conv2D` (same parameters,
same names) that, only when gradients are off and the graph is eager, splits
such a convolution into horizontal strips of output rows. Output rows
``[r0, r1)`` of a convolution with stride ``s``, dilation ``d``, kernel height
``kh`` and top padding ``p`` read the padded-input rows ``[r0*s, (r1-1)*s +
d*(kh-1) + 1)``, i.e. input rows ``[r0*s - p, (r1-1)*s + d*(kh-1) + 1 - p)``;
the part of that halo outside ``[0, H)`` is exactly the zero padding, so each
strip is the same convolution of the sliced input with the strip's own
top/bottom padding (the columns keep the layer's left/right padding). Every
output pixel is therefore the same dot product as in the whole convolution;
only the GEMM blocking (and so float rounding) may differ. Results are
concatenated along the height.

Training, anything under autograd, and traced/exported programs
(``paddle.jit.to_static``) run the plain convolution: tiling is an eager
(dygraph) inference path only; exported models keep one conv op each.

On the CPU in dygraph, the plain convolution of a 3x3, stride-1, "same"
padded (padding = dilation), ungrouped layer with at least
:data:`WINOGRAD_MIN_CHANNELS` input and output channels runs as Winograd
F(2x2, 3x3) (:mod:`paddleseg_ext.ops.winograd`; 2.25x fewer multiplications,
equal to ``F.conv2d`` within float rounding), in training and inference.
``$PADDLESEG_EXT_WINOGRAD=0`` turns that off; GPUs and traced programs keep
``F.conv2d``.

The budget is process-wide: :func:`set_conv_memory_budget` (also a context
manager) or ``$PADDLESEG_EXT_CONV_BUDGET_MB``; ``0`` disables tiling.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .norm import inference_in_place

__all__ = ["StripConv2D", "strip_conv2d", "conv2d", "winograd_applies", "WINOGRAD_MIN_CHANNELS",
           "conv2d_over_concat", "explicit_padding", "conv_memory_budget", "set_conv_memory_budget", "strip_stats"]

_ENV = "PADDLESEG_EXT_CONV_BUDGET_MB"
_DEFAULT_MB = 512
_budget_bytes: Optional[int] = None  # None: read the environment on first use

#: Counters for tests and probes: convolutions run in strips and strips run.
strip_stats = {"tiled_calls": 0, "strips": 0}


def conv_memory_budget() -> int:
    """The im2col budget in bytes above which inference convs run in strips (0 = never)."""
    global _budget_bytes
    if _budget_bytes is None:
        raw = os.environ.get(_ENV, "").strip()
        try:
            mb = float(raw) if raw else float(_DEFAULT_MB)
        except ValueError:
            raise ValueError(f"${_ENV} must be a number of MiB, got {raw!r}") from None
        if mb < 0:
            raise ValueError(f"${_ENV} must be >= 0, got {raw!r}")
        _budget_bytes = int(mb * 2 ** 20)
    return _budget_bytes


class set_conv_memory_budget:  # noqa: N801 (a function that is also a context manager)
    """Set the strip budget (bytes, 0 = off); as a context manager, restore it on exit.

    Example::

        with set_conv_memory_budget(256 * 2 ** 20):
            logits = model(x)
    """

    def __init__(self, budget_bytes: int) -> None:
        global _budget_bytes
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
            raise ValueError(f"budget_bytes must be an int >= 0, got {budget_bytes!r}")
        self._previous = conv_memory_budget()
        _budget_bytes = budget_bytes

    def __enter__(self) -> "set_conv_memory_budget":
        return self

    def __exit__(self, *exc) -> None:
        global _budget_bytes
        _budget_bytes = self._previous


_WINOGRAD_ENV = "PADDLESEG_EXT_WINOGRAD"
#: Fewer channels than this and the tile transforms cost more than the GEMMs save
#: (docs/benchmarks.md, "Winograd F(2x2, 3x3)").
WINOGRAD_MIN_CHANNELS = 64


def winograd_applies(x: paddle.Tensor, weight: paddle.Tensor, stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int], groups: int) -> bool:
    """Whether :func:`conv2d` runs this convolution as Winograd F(2x2, 3x3)."""
    if os.environ.get(_WINOGRAD_ENV, "1").strip() == "0" or not paddle.in_dynamic_mode():
        return False
    if groups != 1 or list(weight.shape[2:]) != [3, 3] or list(stride) != [1, 1]:
        return False
    d = int(dilation[0])
    if int(dilation[1]) != d or any(int(p) != d for p in padding):
        return False
    if min(int(weight.shape[0]), int(weight.shape[1])) < WINOGRAD_MIN_CHANNELS:
        return False
    if x.dtype not in (paddle.float32, paddle.float64) or not x.place.is_cpu_place():
        return False
    from paddleseg_ext.ops.winograd import is_winograd_available

    return is_winograd_available(build=True)


def conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor],
           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
           groups: int) -> paddle.Tensor:
    """``F.conv2d`` (NCHW, ``padding`` as ``(top, bottom, left, right)``), by Winograd
    F(2x2, 3x3) where :func:`winograd_applies`."""
    if winograd_applies(x, weight, stride, padding, dilation, groups):
        from paddleseg_ext.ops.winograd import winograd_conv3x3

        return winograd_conv3x3(x, weight, bias, int(dilation[0]))
    return F.conv2d(x, weight, bias, stride=list(stride), padding=list(padding),
                    dilation=list(dilation), groups=groups)


def _out_size(size: int, k: int, s: int, d: int, p0: int, p1: int) -> int:
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def strip_conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor],
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int, budget_bytes: Optional[int] = None) -> paddle.Tensor:
    """``F.conv2d`` (NCHW, zero padding) in output-row strips whose im2col fits the budget.

    Args:
        x: ``[N, C_in, H, W]``.
        weight: ``[C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        stride: ``(sh, sw)``.
        padding: ``(top, bottom, left, right)``.
        dilation: ``(dh, dw)``.
        groups: convolution groups.
        budget_bytes: column-buffer budget; None reads :func:`conv_memory_budget`.

    Returns:
        ``[N, C_out, H_out, W_out]``, equal to the whole convolution up to
        float rounding. One strip (the plain conv) when the buffer fits, the
        budget is 0, or gradients are on.
    """
    budget = conv_memory_budget() if budget_bytes is None else budget_bytes
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, padding
    kh, kw = int(weight.shape[2]), int(weight.shape[3])
    h, w = int(x.shape[2]), int(x.shape[3])
    h_out = _out_size(h, kh, sh, dh, top, bottom)
    w_out = _out_size(w, kw, sw, dw, left, right)
    plain_padding = [top, bottom, left, right]
    # A 1x1 stride-1 unpadded conv is a plain GEMM in Paddle: no column buffer.
    needs_cols = kh * kw > 1 or sh * sw > 1 or any(plain_padding)
    row_bytes = int(weight.shape[1]) * kh * kw * w_out * x.element_size()
    if (not needs_cols or budget <= 0 or not inference_in_place() or h_out <= 1
            or row_bytes * h_out <= budget):
        return conv2d(x, weight, bias, [sh, sw], plain_padding, [dh, dw], groups)
    rows = max(1, budget // row_bytes)
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


class StripConv2D(nn.Conv2D):
    """:class:`paddle.nn.Conv2D` whose no-grad eager forward runs in row strips.

    Same constructor, parameters (``weight``, ``bias``) and results as
    ``nn.Conv2D``; when gradients are off (``paddle.no_grad()``) in dygraph
    and the im2col buffer would exceed :func:`conv_memory_budget`, the
    convolution runs in strips of output rows (:func:`strip_conv2d`); in
    dygraph on the CPU an eligible 3x3 conv runs as Winograd F(2x2, 3x3)
    (:func:`conv2d`). Otherwise, and for padding modes other than zeros or
    NHWC data, it is ``nn.Conv2D.forward``.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        pad = explicit_padding(self) if paddle.in_dynamic_mode() else None
        if pad is None:
            return super().forward(x)
        return strip_conv2d(x, self.weight, self.bias, self._stride, pad, self._dilation,
                            self._groups)


def conv2d_over_concat(conv: nn.Conv2D, parts: Sequence[paddle.Tensor]) -> paddle.Tensor:
    """``conv(paddle.concat(parts, axis=1))`` without materialising the concat.

    A convolution is linear in its input channels, so with the weight split
    along them, ``conv(concat(a, b)) = conv_a(a) + conv_b(b)`` (bias once).
    Used on no-grad eager inference only (the sum's rounding differs from one
    GEMM's); anywhere else, or for grouped / non-zero-padded convs, it
    concatenates and calls ``conv``.

    Args:
        conv: an ``nn.Conv2D`` (or :class:`StripConv2D`) with ``groups == 1``.
        parts: NCHW tensors whose channels add up to ``conv``'s input channels.

    Returns:
        The convolution's output.
    """
    pad = explicit_padding(conv) if inference_in_place() else None
    if pad is None or conv._groups != 1 or len(parts) < 2:
        return conv(paddle.concat(list(parts), axis=1))
    out = None
    c0 = 0
    for i, part in enumerate(parts):
        c1 = c0 + int(part.shape[1])
        y = strip_conv2d(part, conv.weight[:, c0:c1], conv.bias if i == 0 else None,
                         conv._stride, pad, conv._dilation, 1)
        out = y if out is None else out.add_(y)
        del y
        c0 = c1
    if c0 != int(conv.weight.shape[1]):
        raise ValueError(f"conv2d_over_concat: parts have {c0} channels, the conv expects "
                         f"{int(conv.weight.shape[1])}")
    return out
