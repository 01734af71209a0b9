"""Feature Pyramid Network neck and the Semantic FPN decoder."""

from __future__ import annotations

import math
from typing import List, Sequence

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs.validators import (BOOL, DROPOUT, POSITIVE_INT, list_of, one_of,
                                             validated)

#: ``SemanticFPNHead(upsample=...)``: each 2x step to the next finer level's exact size
#: (ours), or by a fixed factor 2 and then one resize to the finest level (mmsegmentation).
FPN_UPSAMPLE_RULES = ("to_next_level", "fixed_x2")

from .conv_bn import ConvBNReLU
from .resize import resize_to, spatial_size


@validated(in_channels=list_of(POSITIVE_INT), out_channels=POSITIVE_INT)
class FPN(nn.Layer):
    """Feature Pyramid Network neck (top-down path with lateral connections).

    Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017
    (https://arxiv.org/abs/1612.03144), Sec. 3: each backbone level gets a 1x1
    lateral conv to ``out_channels``; going from coarse to fine, the running
    map is upsampled (nearest, to the finer level's exact size so odd input
    sizes work) and added to the lateral; a 3x3 conv on every merged map
    reduces the upsampling aliasing. Plain convs with bias, no norm, as in the
    paper and mmsegmentation's ``FPN`` neck.

    Args:
        in_channels: channels of the backbone levels, fine to coarse.
        out_channels: channels of every pyramid level (256 in the paper).

    Shape:
        feats: list of ``[N, in_channels[i], H_i, W_i]`` (fine to coarse) ->
        list of ``[N, out_channels, H_i, W_i]``, same order.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.lateral_convs = nn.LayerList([nn.Conv2D(c, out_channels, 1) for c in in_channels])
        self.output_convs = nn.LayerList([nn.Conv2D(out_channels, out_channels, 3, padding=1)
                                          for _ in in_channels])

    def forward(self, feats: Sequence[paddle.Tensor]) -> List[paddle.Tensor]:
        if len(feats) != len(self.lateral_convs):
            raise ValueError(f"FPN: expected {len(self.lateral_convs)} feature maps, got {len(feats)}")
        merged = self.lateral_convs[-1](feats[-1])
        outs = [self.output_convs[-1](merged)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            merged = lateral + resize_to(merged, spatial_size(lateral), mode="nearest")
            outs.append(self.output_convs[i](merged))
        return outs[::-1]


def _doubled(size):
    """Twice a spatial size: a static ``[h, w]`` or a traced shape tensor."""
    return size * 2 if isinstance(size, paddle.Tensor) else [d * 2 for d in size]


@validated(in_channels=POSITIVE_INT, feature_strides=list_of(POSITIVE_INT), channels=POSITIVE_INT,
           num_classes=POSITIVE_INT, dropout=DROPOUT, align_corners=BOOL,
           upsample=one_of(*FPN_UPSAMPLE_RULES))
class SemanticFPNHead(nn.Layer):
    """Semantic FPN decoder: merge all pyramid levels at the finest stride.

    Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019
    (https://arxiv.org/abs/1901.02446), Sec. 3 / Fig. 3: the level at stride
    ``s`` goes through ``log2(s / s_0)`` stages of 3x3 conv-BN-ReLU + 2x
    bilinear upsampling (one conv and no upsampling for the finest level), so
    every level arrives at the finest stride ``s_0`` (4 for a ResNet FPN);
    the levels are summed and classified (dropout + 1x1). Each 2x step is
    resized to the exact size of the next finer level, so odd input sizes
    line up. Batch norm replaces the paper's group norm (the toolkit-wide
    norm helper picks SyncBN on GPU).

    Args:
        in_channels: channels of each pyramid level (the FPN's ``out_channels``).
        feature_strides: stride of each level, finest first; every stride
            must be the finest one times a power of two, and all intermediate
            powers must be present (``[4, 8, 16, 32]``, also ``[4, 8, 8, 8]``
            from a dilated backbone).
        channels: width of the scale heads (128 in the paper).
        num_classes: K.
        dropout: dropout probability before the classifier.
        align_corners: for the bilinear upsampling.
        upsample: ``'to_next_level'`` (each 2x step resized to the next finer
            level's exact size) or ``'fixed_x2'`` (mmsegmentation's ``FPNHead``,
            ``mmseg/models/decode_heads/fpn_head.py``: each step doubles the
            size, then the level is resized to the finest level's size once).
            The two agree when the input size is a multiple of the coarsest
            stride; otherwise they are different functions.

    Shape:
        feats: list of ``[N, in_channels, H_i, W_i]`` -> logits
        ``[N, num_classes, H_0, W_0]`` at the finest level's size.
    """

    def __init__(self, in_channels: int, feature_strides: Sequence[int], channels: int,
                 num_classes: int, dropout: float = 0.1, align_corners: bool = False,
                 upsample: str = "to_next_level") -> None:
        super().__init__()
        strides = feature_strides
        base = strides[0]
        # steps[i][k]: index of the level whose size the k-th 2x upsample of level i targets.
        self.steps: List[List[int]] = []
        for s in strides:
            ratio = s / base
            n_up = int(round(math.log2(ratio))) if ratio >= 1 else -1
            targets = [strides.index(s >> (k + 1)) if (s >> (k + 1)) in strides else -1
                       for k in range(max(n_up, 0))]
            if n_up < 0 or 2 ** n_up != ratio or -1 in targets:
                raise ValueError("SemanticFPNHead: feature_strides must start with the finest stride "
                                 "and hold it times powers of two with no gaps (e.g. [4, 8, 16, 32]), "
                                 f"got {feature_strides!r}")
            self.steps.append(targets)
        self.align_corners = bool(align_corners)
        self.upsample = upsample
        self.scale_heads = nn.LayerList()
        for targets in self.steps:
            n_conv = max(1, len(targets))
            self.scale_heads.append(nn.LayerList(
                [ConvBNReLU(in_channels if k == 0 else channels, channels, 3) for k in range(n_conv)]))
        self.dropout = nn.Dropout2D(p=float(dropout))
        # Small classifier init (std 0.01, as mmseg's decode heads): the sum of the
        # scale-head maps would otherwise start with large random logits.
        self.cls = nn.Conv2D(channels, num_classes, 1,
                             weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 0.01)),
                             bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))

    def forward(self, feats: Sequence[paddle.Tensor]) -> paddle.Tensor:
        if len(feats) != len(self.scale_heads):
            raise ValueError(f"SemanticFPNHead: expected {len(self.scale_heads)} feature maps, "
                             f"got {len(feats)}")
        out = None
        finest = spatial_size(feats[0])
        for feat, convs, targets in zip(feats, self.scale_heads, self.steps):
            y = feat
            for k, conv in enumerate(convs):
                y = conv(y)
                if k < len(targets):
                    size = (spatial_size(feats[targets[k]]) if self.upsample == "to_next_level"
                            else _doubled(spatial_size(y)))
                    y = resize_to(y, size, self.align_corners)
            if self.upsample == "fixed_x2" and targets:
                y = resize_to(y, finest, self.align_corners)
            out = y if out is None else out + y
        return self.cls(self.dropout(out))
