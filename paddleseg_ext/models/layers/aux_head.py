"""FCN-style auxiliary head used for deep supervision on an intermediate stage."""

from __future__ import annotations

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs.validators import DROPOUT, POSITIVE_INT, validated

from .conv_bn import ConvBNReLU


@validated(in_channels=POSITIVE_INT, num_classes=POSITIVE_INT, inter_channels=POSITIVE_INT,
           dropout=DROPOUT)
class AuxHead(nn.Layer):
    """3x3 ConvBNReLU -> dropout -> 1x1 classifier.

    This is the auxiliary branch of PSPNet (Zhao et al., "Pyramid Scene Parsing
    Network", CVPR 2017, https://arxiv.org/abs/1612.01105), applied to the
    stage-3 (res4) features; its loss is weighted 0.4 in the paper. DANet,
    PSANet etc. reuse it unchanged.

    Args:
        in_channels: channels of the input feature map.
        num_classes: number of output classes.
        inter_channels: channels of the 3x3 conv (256 as in mmseg's FCNHead).
        dropout: dropout probability before the classifier.

    Shape:
        x: ``[N, in_channels, H, W]`` -> logits ``[N, num_classes, H, W]``.
    """

    def __init__(self, in_channels: int, num_classes: int, inter_channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.conv_bn_relu = ConvBNReLU(in_channels, inter_channels, 3)
        self.dropout = nn.Dropout(p=dropout)
        self.conv = nn.Conv2D(inter_channels, num_classes, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.conv(self.dropout(self.conv_bn_relu(x)))
