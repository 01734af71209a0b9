"""Pyramid pooling module (PPM) of PSPNet."""

from __future__ import annotations

from typing import Sequence

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs.validators import BOOL, POSITIVE_INT, list_of, validated

from .conv_bn import ConvBNReLU
from .resize import resize_to, spatial_size


@validated(in_channels=POSITIVE_INT, out_channels=POSITIVE_INT,
           bin_sizes=list_of(POSITIVE_INT), dim_reduction=BOOL, align_corners=BOOL)
class PPModule(nn.Layer):
    """Pyramid pooling module.

    From Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017
    (https://arxiv.org/abs/1612.01105), Sec. 3.2: the input is average-pooled
    to each ``bin x bin`` grid, each pooled map is reduced by a 1x1
    ConvBNReLU to ``in_channels / len(bin_sizes)`` channels, upsampled back and
    concatenated with the input; a 3x3 ConvBNReLU then fuses the result.

    The ``ppm_split`` rewrite (:mod:`paddleseg_ext.runtime.forms.ppm`) computes
    the fusing convolution split over its inputs, the branches at their pooled
    size: the same function with about half the multiply-adds.

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

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        size = spatial_size(x)
        cat = [x] + [resize_to(stage(x), size, self.align_corners) for stage in self.stages]
        return self.bottleneck(paddle.concat(cat, axis=1))
