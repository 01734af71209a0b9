"""Pyramid pooling module (PPM) of PSPNet."""

from __future__ import annotations

import itertools
from typing import Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs.validators import BOOL, POSITIVE_INT, list_of, validated

from .conv_bn import ConvBNReLU
from .resize import resize_to, spatial_size
from .resized_conv import conv_of_upsampled
from .strip_conv import explicit_padding, strip_conv2d


@validated(in_channels=POSITIVE_INT, out_channels=POSITIVE_INT,
           bin_sizes=list_of(POSITIVE_INT), dim_reduction=BOOL, align_corners=BOOL)
class PPModule(nn.Layer):
    """Pyramid pooling module.

    From Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017
    (https://arxiv.org/abs/1612.01105), Sec. 3.2: the input is average-pooled
    to each ``bin x bin`` grid, each pooled map is reduced by a 1x1
    ConvBNReLU to ``in_channels / len(bin_sizes)`` channels, upsampled back and
    concatenated with the input; a 3x3 ConvBNReLU then fuses the result.

    In dygraph the fusing convolution is computed split over its input
    channels, without upsampling the branches or building the concatenation:
    a conv over the input plus, for the branches,
    :func:`~paddleseg_ext.models.layers.resized_conv.conv_of_upsampled` at the
    pooled size (the same function up to float rounding, about half the
    multiply-adds of PSPNet's largest convolution). Parameters are the
    concatenating form's; traced or exported programs
    (``paddle.jit.to_static``) keep that form, one ``conv2d``.

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
        bins = tuple(bin_sizes)
        branch_ch = in_channels // len(bins) if dim_reduction else in_channels
        if branch_ch < 1:
            raise ValueError(f"PPModule: in_channels={in_channels} is too small for "
                             f"{len(bins)} bins with dim_reduction")
        self.bin_sizes = bins
        self.align_corners = align_corners
        self.out_channels = out_channels
        self.stages = nn.LayerList([
            nn.Sequential(nn.AdaptiveAvgPool2D(b), ConvBNReLU(in_channels, branch_ch, 1))
            for b in bins])
        self.bottleneck = ConvBNReLU(in_channels + branch_ch * len(bins), out_channels, 3)
        self.in_channels = in_channels
        self.branch_channels = branch_ch
        #: Compute the bottleneck split over its inputs in dygraph (see the class docstring).
        self.split_bottleneck = True

    @paddle.jit.not_to_static
    def _split_padding(self) -> Optional[Tuple[int, int, int, int]]:
        """The bottleneck's padding when the split form applies (dygraph, stride 1, symmetric)."""
        if not (paddle.in_dynamic_mode() and self.split_bottleneck):
            return None
        conv = self.bottleneck._conv
        pad = explicit_padding(conv)
        if pad is None or pad[0] != pad[1] or pad[2] != pad[3] or list(conv._stride) != [1, 1]:
            return None
        return pad

    @paddle.jit.not_to_static
    def _forward_split(self, x: paddle.Tensor, pad: Tuple[int, int, int, int]) -> paddle.Tensor:
        conv, c, cb = self.bottleneck._conv, self.in_channels, self.branch_channels
        sizes = [c] + [cb] * len(self.stages)
        if paddle.is_grad_enabled() and not conv.weight.stop_gradient:
            # One split, not five slices: each slice's backward zero-fills a gradient
            # of the whole [512, 4096, 3, 3] weight (17.6 % of a PSPNet-R50 train step).
            parts = paddle.split(conv.weight, sizes, axis=1)
        else:  # no backward: slices are views, a split would copy the weight (35 ms)
            ends = itertools.accumulate(sizes)
            parts = [conv.weight[:, e - n:e] for n, e in zip(sizes, ends)]
        y = strip_conv2d(x, parts[0], conv.bias, conv._stride, pad, conv._dilation, 1)
        pooled = [stage(x) for stage in self.stages]
        y = y + conv_of_upsampled(pooled, parts[1:], spatial_size(x), self.align_corners,
                                  padding=(pad[0], pad[2]), dilation=tuple(conv._dilation))
        return self.bottleneck._act(self.bottleneck._norm(y))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        pad = self._split_padding()
        if pad is not None:
            return self._forward_split(x, pad)
        size = spatial_size(x)
        cat = [x] + [resize_to(stage(x), size, self.align_corners) for stage in self.stages]
        return self.bottleneck(paddle.concat(cat, axis=1))
