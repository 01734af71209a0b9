"""PSPNet: Pyramid Scene Parsing Network."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.cvlibs.validators import (BOOL, DROPOUT, POSITIVE_INT, feature_indices,
                                             list_of, optional, validated)
from paddleseg_ext.models.layers import AuxHead, PPModule, resize_to, spatial_size
from paddleseg_ext.utils.pretrained import load_pretrained


@manager.MODELS.register
@validated(num_classes=POSITIVE_INT, pp_out_channels=POSITIVE_INT,
           bin_sizes=list_of(POSITIVE_INT), enable_auxiliary_loss=BOOL, dropout=DROPOUT,
           align_corners=BOOL, aux_inter_channels=optional(POSITIVE_INT))
class PSPNet(nn.Layer):
    """PSPNet semantic segmentation model.

    Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017
    (https://arxiv.org/abs/1612.01105). A dilated backbone feeds its last stage
    to a pyramid pooling module (bins 1, 2, 3, 6), a 3x3 ConvBNReLU bottleneck,
    dropout and a 1x1 classifier; during training an auxiliary FCN head on the
    previous stage adds deep supervision (weight 0.4 in the paper, set by the
    loss ``coef``).

    PaddleSeg 2.x's PSPNet is the same function: its PPM and aux convs carry
    a bias before their BatchNorm (folded into the BN's running mean when its
    checkpoints load, see :mod:`paddleseg_ext.checkpoints.adapters.paddleseg`)
    and it concatenates the pooled branches in the reverse bin order (a
    permutation of the bottleneck's input channels, applied on load).

    Args:
        num_classes: number of classes C.
        backbone: a built backbone whose forward returns a list of features
            and which exposes ``feat_channels``.
        backbone_indices: (aux feature index, PPM feature index).
        pp_out_channels: channels after the PPM bottleneck.
        bin_sizes: pooling grid sizes of the PPM.
        enable_auxiliary_loss: build and (in training) run the aux head.
        dropout: dropout probability before both classifiers.
        align_corners: for all bilinear resizes.
        aux_inter_channels: width of the aux head's 3x3 conv; ``None`` takes
            a quarter of the aux feature's channels, as PaddleSeg 2.x's
            ``AuxLayer`` does (256 on ResNet50/101, 64 on ResNet18/34).
        pretrained: path or URL of whole-model weights, or None.

    Shape:
        x: ``[N, 3, H, W]`` -> list of ``[N, C, H, W]`` logits: ``[main, aux]``
        in training with the aux head, ``[main]`` otherwise (see
        :attr:`output_names`).
    """

    def __init__(self, num_classes: int, backbone: nn.Layer,
                 backbone_indices: Sequence[int] = (2, 3), pp_out_channels: int = 1024,
                 bin_sizes: Sequence[int] = (1, 2, 3, 6), enable_auxiliary_loss: bool = True,
                 dropout: float = 0.1, align_corners: bool = False,
                 aux_inter_channels: Optional[int] = None,
                 pretrained: Optional[str] = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        idx = feature_indices("PSPNet", backbone, backbone_indices,
                              meaning="(aux feature, PPM feature)")

        self.backbone = backbone
        self.backbone_indices = idx
        self.enable_auxiliary_loss = bool(enable_auxiliary_loss)
        self.align_corners = bool(align_corners)
        aux_ch, ppm_ch = (backbone.feat_channels[i] for i in idx)

        self.psp_module = PPModule(ppm_ch, pp_out_channels, bin_sizes, dim_reduction=True,
                                   align_corners=self.align_corners)
        self.dropout = nn.Dropout(p=float(dropout))
        self.cls = nn.Conv2D(pp_out_channels, num_classes, 1)
        aux_inter = aux_ch // 4 if aux_inter_channels is None else aux_inter_channels
        self.aux_head = (AuxHead(aux_ch, num_classes, aux_inter, dropout=float(dropout))
                         if self.enable_auxiliary_loss else None)

        self.pretrained = pretrained
        if pretrained:
            load_pretrained(self, pretrained)

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Names of the outputs ``forward`` returns in the current mode."""
        if self.training and self.enable_auxiliary_loss:
            return ("seg", "aux")
        return ("seg",)

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        feats = self.backbone(x)
        size = spatial_size(x)
        y = self.psp_module(feats[self.backbone_indices[1]])
        logits = [self.cls(self.dropout(y))]
        if self.training and self.aux_head is not None:  # aux branch is train-only
            logits.append(self.aux_head(feats[self.backbone_indices[0]]))
        return [resize_to(logit, size, self.align_corners) for logit in logits]
