"""PaddleSeg 2.x's FPN neck and FPN decoder for PointRend (``decoder: paddleseg``).

PaddleSeg's PointRend (``paddleseg/models/pointrend.py``, 2.8) is trained
with a decoder that is not the Semantic FPN of Kirillov et al. (see
:mod:`.fpn`); to load its checkpoints exactly this module builds the same
function, under this toolkit's layer names:

* neck: each level's lateral is conv(bias) + BN + ReLU (here a 1x1
  :class:`ConvBNReLU`, the bias folded into the BN on load); the top-down
  path upsamples bilinearly with ``align_corners=True``; every merged level
  but the coarsest gets a 3x3 ConvBNReLU, the coarsest is its lateral
  (PaddleSeg also builds a 3x3 conv for it and never calls it);
* decoder: PaddleSeg hands the pyramid to its FPN head coarse-to-fine while
  the head's strides read fine-to-coarse, so the coarsest level gets one
  3x3 conv and the ``k``-th finer one ``k`` rounds of 3x3 conv + 2x bilinear
  upsampling; every branch is then resized to the *coarsest* level's size
  and summed. The convs are conv(bias) + ReLU, no norm. Its logits are at
  the coarsest level's stride (8 with PaddleSeg's output-stride-8 recipe).
"""

from __future__ import annotations

from typing import List, Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs.validators import BOOL, DROPOUT, POSITIVE_INT, list_of, validated

from .conv_bn import ConvBNReLU
from .resize import resize_to, spatial_size


@validated(in_channels=list_of(POSITIVE_INT), out_channels=POSITIVE_INT)
class PaddleSegFPN(nn.Layer):
    """PaddleSeg 2.x's FPN neck (see module doc): the arguments and shapes of
    :class:`~paddleseg_ext.models.layers.fpn.FPN`, another function of them."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.lateral_convs = nn.LayerList([ConvBNReLU(c, out_channels, 1) for c in in_channels])
        self.output_convs = nn.LayerList([ConvBNReLU(out_channels, out_channels, 3)
                                          for _ in in_channels[:-1]])

    def forward(self, feats: Sequence[paddle.Tensor]) -> List[paddle.Tensor]:
        if len(feats) != len(self.lateral_convs):
            raise ValueError(f"PaddleSegFPN: expected {len(self.lateral_convs)} feature maps, "
                             f"got {len(feats)}")
        merged = self.lateral_convs[-1](feats[-1])
        outs = [merged]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            merged = lateral + resize_to(merged, spatial_size(lateral), align_corners=True)
            outs.append(self.output_convs[i](merged))
        return outs[::-1]


@validated(in_channels=POSITIVE_INT, num_levels=POSITIVE_INT, channels=POSITIVE_INT,
           num_classes=POSITIVE_INT, dropout=DROPOUT, align_corners=BOOL)
class PaddleSegFPNHead(nn.Layer):
    """PaddleSeg 2.x's FPN decoder of PointRend (see module doc).

    ``scale_heads[k]`` reads the ``k``-th level counted from the coarsest.

    Args:
        in_channels: channels of each pyramid level.
        num_levels: number of pyramid levels.
        channels: width of the scale heads (128).
        num_classes: K.
        dropout: channel dropout probability before the classifier.
        align_corners: for the bilinear resizes.

    Shape:
        feats: list of ``[N, in_channels, H_i, W_i]`` (fine to coarse) ->
        logits ``[N, K, H_c, W_c]`` at the coarsest level's size.
    """

    def __init__(self, in_channels: int, num_levels: int, channels: int, num_classes: int,
                 dropout: float = 0.0, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = bool(align_corners)
        self.scale_heads = nn.LayerList([
            nn.LayerList([nn.Conv2D(in_channels if j == 0 else channels, channels, 3, padding=1)
                          for j in range(max(1, k))])
            for k in range(num_levels)])
        self.dropout = nn.Dropout2D(p=float(dropout))
        self.cls = nn.Conv2D(channels, num_classes, 1)

    def forward(self, feats: Sequence[paddle.Tensor]) -> paddle.Tensor:
        if len(feats) != len(self.scale_heads):
            raise ValueError(f"PaddleSegFPNHead: expected {len(self.scale_heads)} feature maps, "
                             f"got {len(feats)}")
        out = None
        for k, convs in enumerate(self.scale_heads):
            y = feats[len(feats) - 1 - k]
            for conv in convs:
                y = F.relu(conv(y))
                if k > 0:
                    y = F.interpolate(y, scale_factor=2.0, mode="bilinear",
                                      align_corners=self.align_corners)
            if out is None:
                out = y
            else:
                out = out + resize_to(y, spatial_size(out), self.align_corners)
        return self.cls(self.dropout(out))
