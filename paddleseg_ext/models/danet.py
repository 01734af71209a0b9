"""DANet: Dual Attention Network for scene segmentation."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.cvlibs.validators import (BOOL, DROPOUT, POSITIVE_INT, feature_indices,
                                             one_of, optional, validated)
from paddleseg_ext.models.layers import AuxHead, ConvBNReLU, resize_to, spatial_size
from paddleseg_ext.models.layers.attention import CAM, PAM
from paddleseg_ext.utils.pretrained import load_pretrained


#: DANet's auxiliary heads: PaddleSeg 2.x's linear one on stage 4, the FCN one on stage 3.
AUX_HEADS = ("linear", "fcn")


def _classifier(in_channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    # Channel-wise dropout (Dropout2D) as in the authors' code and mmseg's heads.
    return nn.Sequential(nn.Dropout2D(p=dropout), nn.Conv2D(in_channels, num_classes, 1))


@manager.HEADS.register
@validated(in_channels=POSITIVE_INT, num_classes=POSITIVE_INT,
           inter_channels=optional(POSITIVE_INT), dropout=DROPOUT)
class DAHead(nn.Layer):
    """Dual attention head: a position branch and a channel branch, fused by sum.

    Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019
    (https://arxiv.org/abs/1809.02983), Sec. 3.4 / Fig. 2. Each branch is
    3x3 ConvBNReLU (C -> inter) -> attention (:class:`PAM` / :class:`CAM`) ->
    3x3 ConvBNReLU, with its own classifier (dropout + 1x1); the sum of the
    two branch features goes through the fused classifier. The branch
    classifiers only give extra supervision, so they run in training only.

    Args:
        in_channels: C, channels of the input feature.
        num_classes: K.
        inter_channels: branch width (C / 4 in the paper: 2048 -> 512).
        dropout: dropout probability before each classifier.

    Shape:
        x: ``[N, C, h, w]`` -> training ``[fused, pam, cam]``, eval
        ``[fused]``; each ``[N, K, h, w]``.
    """

    def __init__(self, in_channels: int, num_classes: int, inter_channels: Optional[int] = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        inter = in_channels // 4 if inter_channels is None else inter_channels
        POSITIVE_INT("DAHead", "inter_channels", inter)
        self.inter_channels = inter
        self.pam_in = ConvBNReLU(in_channels, inter, 3)
        self.pam = PAM(inter)
        self.pam_out = ConvBNReLU(inter, inter, 3)
        self.pam_cls = _classifier(inter, num_classes, float(dropout))
        self.cam_in = ConvBNReLU(in_channels, inter, 3)
        self.cam = CAM()
        self.cam_out = ConvBNReLU(inter, inter, 3)
        self.cam_cls = _classifier(inter, num_classes, float(dropout))
        self.fused_cls = _classifier(inter, num_classes, float(dropout))

    def branch_inputs(self, x: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """``pam_in(x), cam_in(x)``: the two branches' input convolutions."""
        return self.pam_in(x), self.cam_in(x)

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        pam_x, cam_x = self.branch_inputs(x)
        pam_feat = self.pam_out(self.pam(pam_x))
        cam_feat = self.cam_out(self.cam(cam_x))
        logits = [self.fused_cls(pam_feat + cam_feat)]
        if self.training:
            logits += [self.pam_cls(pam_feat), self.cam_cls(cam_feat)]
        return logits


@manager.MODELS.register
@validated(num_classes=POSITIVE_INT, inter_channels=optional(POSITIVE_INT),
           enable_auxiliary_loss=BOOL, dropout=DROPOUT, align_corners=BOOL,
           aux_head=one_of(*AUX_HEADS), align_mode=one_of(0, 1))
class DANet(nn.Layer):
    """DANet semantic segmentation model.

    Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019
    (https://arxiv.org/abs/1809.02983). A dilated backbone (output stride 8)
    feeds its last stage to a :class:`DAHead`; in training an auxiliary head
    adds deep supervision. Training outputs are ``[fused, pam, cam, aux]``
    (loss ``coef: [1, 1, 1, 0.4]``), eval outputs ``[fused]`` only, without
    running any auxiliary classifier.

    Two switches choose between PaddleSeg 2.x's DANet (the defaults, so
    PaddleSeg's own recipe files build its network and its checkpoints load
    exactly) and this project's paper recipes:

    * ``aux_head``: ``"linear"`` (PaddleSeg) is dropout + 1x1 classifier on
      the attention head's input (stage 4), ``backbone_indices[0]`` unused;
      ``"fcn"`` (paper recipes, as mmsegmentation) is an
      :class:`~paddleseg_ext.models.layers.AuxHead` (3x3 ConvBNReLU to 256,
      dropout, 1x1) on ``backbone_indices[0]`` (stage 3).
    * ``align_mode``: of the final bilinear resize of the logits
      (``F.interpolate``, used when ``align_corners`` is False): 1
      (PaddleSeg, source = scale * target) or 0 (half-pixel centres, as every
      other model here).

    PaddleSeg 2.8 classifies its PAM branch in training with the CAM
    branch's classifier (its ``aux_head_pam`` is built but never used); here
    each branch has its own. Eval logits are unaffected.

    Args:
        num_classes: K.
        backbone: a built backbone exposing ``feat_channels``.
        backbone_indices: (aux feature index, attention feature index).
        inter_channels: attention branch width; default ``C / 4``.
        enable_auxiliary_loss: build and (in training) run the aux head.
        dropout: dropout probability before every classifier.
        align_corners: for resizing logits to the input size.
        aux_head: ``"linear"`` or ``"fcn"`` (see above).
        align_mode: 0 or 1 (see above).
        pretrained: path or URL of whole-model weights, or None.

    Shape:
        x: ``[N, 3, H, W]`` -> list of ``[N, K, H, W]`` logits named by
        :attr:`output_names`.
    """

    def __init__(self, num_classes: int, backbone: nn.Layer,
                 backbone_indices: Sequence[int] = (2, 3), inter_channels: Optional[int] = None,
                 enable_auxiliary_loss: bool = True, dropout: float = 0.1,
                 align_corners: bool = False, aux_head: str = "linear", align_mode: int = 1,
                 pretrained: Optional[str] = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        idx = feature_indices("DANet", backbone, backbone_indices,
                              meaning="(aux feature, attention feature)")
        self.backbone = backbone
        self.backbone_indices = idx
        self.enable_auxiliary_loss = bool(enable_auxiliary_loss)
        self.align_corners = bool(align_corners)
        self.align_mode = align_mode
        self.aux_head_type = aux_head
        aux_ch, head_ch = (backbone.feat_channels[i] for i in idx)
        self.head = DAHead(head_ch, num_classes, inter_channels, float(dropout))
        if not self.enable_auxiliary_loss:
            self.aux_head = None
        elif aux_head == "linear":
            self.aux_head = _classifier(head_ch, num_classes, float(dropout))
        else:
            self.aux_head = AuxHead(aux_ch, num_classes, dropout=float(dropout))
        self.pretrained = pretrained
        if pretrained:
            load_pretrained(self, pretrained)

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Names of the outputs ``forward`` returns in the current mode."""
        if not self.training:
            return ("fused",)
        return ("fused", "pam", "cam") + (("aux",) if self.aux_head is not None else ())

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        feats = self.backbone(x)
        logits = self.head(feats[self.backbone_indices[1]])
        if self.training and self.aux_head is not None:
            aux_in = self.backbone_indices[1 if self.aux_head_type == "linear" else 0]
            logits.append(self.aux_head(feats[aux_in]))
        size = spatial_size(x)
        if self.align_mode == 0 or self.align_corners:
            return [resize_to(logit, size, self.align_corners) for logit in logits]
        return [F.interpolate(logit, size=size, mode="bilinear", align_corners=False, align_mode=1)
                for logit in logits]
