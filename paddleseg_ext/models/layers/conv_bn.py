"""Convolution + batch-norm (+ ReLU) building blocks."""

from __future__ import annotations

from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs.validators import POSITIVE_INT, validated

from .norm import SyncBatchNorm


@validated(in_channels=POSITIVE_INT, out_channels=POSITIVE_INT, kernel_size=POSITIVE_INT,
           stride=POSITIVE_INT, dilation=POSITIVE_INT, groups=POSITIVE_INT)
class ConvBN(nn.Layer):
    """Conv2D (no bias, BN absorbs it) followed by batch norm.

    Sub-layers are named ``_conv`` and ``_batch_norm`` so state-dict keys match
    PaddleSeg's ResNet-vd ``ConvBNLayer`` (``conv1_1._conv.weight``,
    ``conv1_1._batch_norm._mean`` ...), which lets PaddleSeg's ImageNet weights
    load into :class:`~paddleseg_ext.models.backbones.ResNet_vd`. How the conv
    runs (Winograd, row strips) and whether inference works in place are
    rewrites (:mod:`paddleseg_ext.runtime.forms`), not this layer's business.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        dilation: convolution dilation.
        groups: convolution groups.
        padding: explicit padding; ``None`` keeps the spatial size at stride 1
            (``dilation * (kernel_size - 1) // 2``).
        bias: add a conv bias (normally redundant before BN).

    Shape:
        x: ``[N, in_channels, H, W]`` -> ``[N, out_channels, H', W']``.
    """

    #: The batch norm reads the conv's output directly: foldable for inference (fold_bn.py).
    conv_bn_pairs = (("_conv", "_batch_norm"),)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1, groups: int = 1,
                 padding: Optional[int] = None, bias: bool = False) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.in_channels = in_channels
        self.out_channels = out_channels
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride,
                               padding=padding, dilation=dilation, groups=groups,
                               bias_attr=None if bias else False)
        self._batch_norm = SyncBatchNorm(out_channels)

    def after_conv(self, y: paddle.Tensor) -> paddle.Tensor:
        """What follows the convolution: batch norm (and ReLU in :class:`ConvBNReLU`)."""
        return self._batch_norm(y)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.after_conv(self._conv(x))


class ConvBNReLU(ConvBN):
    """:class:`ConvBN` followed by ReLU. Same arguments and shapes as ConvBN."""

    def after_conv(self, y: paddle.Tensor) -> paddle.Tensor:
        return F.relu(self._batch_norm(y))
