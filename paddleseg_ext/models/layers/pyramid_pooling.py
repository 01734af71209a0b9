"""Pyramid pooling module (PPM) of PSPNet."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .conv_bn import ConvBNReLU
from .norm import inference_in_place
from .resize import resize_to, spatial_size
from .strip_conv import explicit_padding, strip_conv2d

Size = Union[int, paddle.Tensor]


@paddle.jit.marker.unified  # no graph control flow: traced as plain Python
def interpolation_matrix(n_in: int, n_out: Size, align_corners: bool, dtype: str) -> paddle.Tensor:
    """``[n_out, n_in]`` weights of 1-D bilinear resizing from ``n_in`` to ``n_out`` samples.

    Taken from ``F.interpolate`` itself (applied to the unit vectors), so the
    weights are those of Paddle's kernel for this ``align_corners`` (and the
    default ``align_mode=0``). Bilinear resizing is separable: resizing a
    ``[h, w]`` map ``p`` to ``[H, W]`` is ``A @ p @ B.T`` with ``A =
    interpolation_matrix(h, H)`` and ``B = interpolation_matrix(w, W)``.
    """
    eye = paddle.eye(n_in, dtype=dtype).reshape([n_in, 1, n_in, 1])
    size = [n_out, 1] if isinstance(n_out, int) else paddle.concat(
        [n_out.reshape([1]).astype("int32"), paddle.ones([1], "int32")])
    out = F.interpolate(eye, size=size, mode="bilinear", align_corners=align_corners)
    return out.reshape([n_in, -1]).t()


@paddle.jit.marker.unified  # no graph control flow: traced as plain Python
def _tap_rows(mat: paddle.Tensor, n_out: Size, taps: int, dilation: int, pad0: int, pad1: int
              ) -> paddle.Tensor:
    """``[n_out, taps * n_in]``: for tap ``k``, ``mat`` shifted by ``k * dilation - pad0`` rows,
    zero where the shift leaves ``[0, n_out)`` (the convolution's zero padding)."""
    padded = F.pad(mat.unsqueeze(0).unsqueeze(0), [0, 0, pad0, pad1]).squeeze([0, 1])
    parts = [paddle.slice(padded, axes=[0], starts=[k * dilation], ends=[k * dilation + n_out])
             for k in range(taps)]
    return paddle.concat(parts, axis=1)


@paddle.jit.marker.unified  # no graph control flow: traced as plain Python
def conv_of_resized(weight: paddle.Tensor, pooled: Sequence[paddle.Tensor], size: Tuple[Size, Size],
                    padding: Sequence[int], dilation: Sequence[int], align_corners: bool
                    ) -> paddle.Tensor:
    """``sum_b conv2d(resize(pooled[b], size), weight_b)`` without resizing anything to ``size``.

    A stride-1, zero-padded convolution of a bilinearly upsampled map only
    mixes channels at the map's own few positions: per kernel tap ``(ky,
    kx)``, ``conv(U)`` adds ``W_tap @ U`` shifted by the tap's offset, and
    ``U = A p B^T`` (see :func:`interpolation_matrix`), so the whole term is
    ``A_bar R B_bar^T`` where ``R`` is ``W_tap @ p`` for every tap (``[O, kh
    * h, kw * w]`` per image, tiny) and ``A_bar``, ``B_bar`` stack the
    shifted resize matrices of the taps. The cost is ``O(O * H * W * sum_b
    kh * h_b)`` multiply-adds instead of ``O(O * H * W * C_b * kh * kw)``:
    for PSPNet's bottleneck (bins 1, 2, 3, 6 at 512 channels each, 3x3) 36
    instead of 18432 per output value. Same function up to float rounding.

    Args:
        weight: ``[O, sum_b C_b, kh, kw]``, the input channels in ``pooled`` order.
        pooled: ``[N, C_b, h_b, w_b]`` maps.
        size: ``(H, W)`` they would be resized to (ints, or scalar tensors when traced).
        padding: ``(top, bottom, left, right)`` zero padding of the convolution.
        dilation: ``(dh, dw)``.
        align_corners: of the bilinear resize.

    Returns:
        ``[N, O, H, W]`` (no bias).
    """
    out_ch, _, kh, kw = (int(s) for s in weight.shape)
    top, bottom, left, right = padding
    dh, dw = dilation
    h_out, w_out = size
    rows: List[paddle.Tensor] = []
    cols: List[paddle.Tensor] = []
    c0 = 0
    for p in pooled:
        c, h, w = (int(s) for s in p.shape[1:])  # the bins are static even when N, H, W are not
        # [O * kh * kw, C_b] @ [N, C_b, h * w]: every tap's channel mix at the pooled positions.
        w_b = weight[:, c0:c0 + c].transpose([0, 2, 3, 1]).reshape([out_ch * kh * kw, c])
        r = paddle.matmul(w_b, p.reshape([0, c, h * w]))  # reshape 0: keep N
        r = r.reshape([0, out_ch, kh, kw, h, w]).transpose([0, 1, 2, 4, 3, 5])
        r = r.reshape([0, out_ch, kh * h, kw * w])
        a = _tap_rows(interpolation_matrix(h, h_out, align_corners, p.dtype), h_out, kh, dh, top, bottom)
        b = _tap_rows(interpolation_matrix(w, w_out, align_corners, p.dtype), w_out, kw, dw, left, right)
        rows.append(a)
        cols.append(paddle.matmul(r, b, transpose_y=True))  # [N, O, kh * h, W]
        c0 += c
    # One contraction over every branch's (tap, row) pairs: [H, K] @ [N, O, K, W].
    return paddle.matmul(paddle.concat(rows, axis=1), paddle.concat(cols, axis=2))


class PPModule(nn.Layer):
    """Pyramid pooling module.

    From Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017
    (https://arxiv.org/abs/1612.01105), Sec. 3.2: the input is average-pooled
    to each ``bin x bin`` grid, each pooled map is reduced by a 1x1
    ConvBNReLU to ``in_channels / len(bin_sizes)`` channels, upsampled back and
    concatenated with the input; a 3x3 ConvBNReLU then fuses the result.

    The fusing convolution is computed without the upsampled branches or the
    concatenation: it is linear in its input channels, so it splits into a
    convolution of the input (``C`` channels) plus, for the pooled branches,
    :func:`conv_of_resized`, which works at the pooled resolution. For
    PSPNet's recipe that halves the bottleneck, the largest convolution of
    the network, in training and inference alike; the function, parameters
    and checkpoints are those of the concatenating form (float rounding
    aside). Bottlenecks other than a stride-1 zero-padded NCHW convolution
    run the concatenating form.

    Args:
        in_channels: channels C of the input.
        out_channels: channels of the fused output.
        bin_sizes: pooled grid sizes, e.g. ``(1, 2, 3, 6)``.
        dim_reduction: reduce each branch to ``C // len(bin_sizes)`` channels
            (the paper's choice); otherwise keep C.
        align_corners: used when upsampling the pooled branches.

    Shape:
        x: ``[N, C, H, W]`` -> ``[N, out_channels, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 bin_sizes: Sequence[int] = (1, 2, 3, 6), dim_reduction: bool = True,
                 align_corners: bool = False) -> None:
        super().__init__()
        bins = tuple(bin_sizes) if isinstance(bin_sizes, (list, tuple)) else ()
        if not bins or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in bins):
            raise ValueError("PPModule: bin_sizes must be a non-empty list of positive ints, "
                             f"got {bin_sizes!r}")
        branch_ch = in_channels // len(bins) if dim_reduction else in_channels
        if branch_ch < 1:
            raise ValueError(f"PPModule: in_channels={in_channels} is too small for "
                             f"{len(bins)} bins with dim_reduction")
        self.bin_sizes = bins
        self.align_corners = align_corners
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stages = nn.LayerList([
            nn.Sequential(nn.AdaptiveAvgPool2D(b), ConvBNReLU(in_channels, branch_ch, 1))
            for b in bins])
        self.bottleneck = ConvBNReLU(in_channels + branch_ch * len(bins), out_channels, 3)
        #: Compute the bottleneck as conv(x) + conv_of_resized(branches) (False: concatenate).
        self.split_bottleneck = True

    def _split_padding(self) -> Optional[Tuple[int, int, int, int]]:
        conv = self.bottleneck._conv
        if not self.split_bottleneck or conv._groups != 1 or list(conv._stride) != [1, 1]:
            return None
        return explicit_padding(conv)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        size = spatial_size(x)
        pooled = [stage(x) for stage in self.stages]
        pad = self._split_padding()
        if pad is None:
            cat = [x] + [resize_to(p, size, self.align_corners) for p in pooled]
            return self.bottleneck(paddle.concat(cat, axis=1))
        conv = self.bottleneck._conv
        c = self.in_channels
        if inference_in_place():  # eager no-grad: row strips under the im2col budget
            y = strip_conv2d(x, conv.weight[:, :c], conv.bias, conv._stride, pad, conv._dilation, 1)
        else:
            y = F.conv2d(x, conv.weight[:, :c], conv.bias, padding=list(pad), dilation=conv._dilation)
        hw = (size[0], size[1])
        branches = conv_of_resized(conv.weight[:, c:], pooled, hw, pad, conv._dilation,
                                   self.align_corners)
        y = y.add_(branches) if inference_in_place() else y + branches
        return self.bottleneck.norm_act(y)
