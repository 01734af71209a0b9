"""PSPNet's pyramid pooling with its fusing convolution split over its inputs.

The plain :class:`~paddleseg_ext.models.layers.PPModule` upsamples each pooled branch to the
feature size, concatenates them after the input and convolves the concatenation. A
convolution is linear in its input channels, so the same output is a convolution of the
input plus, for the branches, :func:`~.resized_conv.conv_of_upsampled` computed at the pooled
size: about half the multiply-adds of PSPNet's largest convolution, and no upsampled maps.
"""

from __future__ import annotations

import itertools
from typing import List

import paddle

from ...models.layers.pyramid_pooling import PPModule
from ...models.layers.resize import spatial_size
from .conv import explicit_padding, strip_conv2d
from .resized_conv import conv_of_upsampled

__all__ = ["SplitPPModule", "split_applies"]


def split_applies(ppm: PPModule) -> bool:
    """The split form needs the bottleneck's stride 1 and symmetric zero padding."""
    conv = ppm.bottleneck._conv
    pad = explicit_padding(conv)
    return (pad is not None and pad[0] == pad[1] and pad[2] == pad[3]
            and [int(s) for s in conv._stride] == [1, 1])


class SplitPPModule(PPModule):
    """Form of :class:`PPModule`: the fusing convolution split over its inputs.

    Attributes:
        weight_for_backward: split the bottleneck weight with one ``paddle.split`` (training:
            five slices would each zero-fill a whole-weight gradient in backward, 17.6 % of a
            PSPNet-R50 train step) rather than slicing views (inference: a split would copy
            the weight).
        budget_bytes, winograd: how the input's part of the convolution runs
            (:func:`~.conv.strip_conv2d`).
    """

    plain_class = PPModule
    form_attributes = ("weight_for_backward", "budget_bytes", "winograd")

    def _weight_parts(self) -> List[paddle.Tensor]:
        conv = self.bottleneck._conv
        sizes = [self.in_channels] + [self.branch_channels] * len(self.stages)
        if self.weight_for_backward:
            return paddle.split(conv.weight, sizes, axis=1)
        ends = itertools.accumulate(sizes)
        return [conv.weight[:, e - n:e] for n, e in zip(sizes, ends)]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        conv = self.bottleneck._conv
        pad = explicit_padding(conv)
        parts = self._weight_parts()
        y = strip_conv2d(x, parts[0], conv.bias, conv._stride, pad, conv._dilation, 1,
                         self.budget_bytes, self.winograd)
        pooled = [stage(x) for stage in self.stages]
        y = y + conv_of_upsampled(pooled, parts[1:], spatial_size(x), self.align_corners,
                                  padding=(pad[0], pad[2]), dilation=tuple(conv._dilation))
        return self.bottleneck.after_conv(y)
