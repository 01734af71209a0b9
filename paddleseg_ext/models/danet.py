"""DANet: Dual Attention Network for scene segmentation."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.models.layers import AuxHead, ConvBNReLU, resize_to, spatial_size
from paddleseg_ext.models.layers.attention import CAM, PAM
from paddleseg_ext.utils.pretrained import load_pretrained


def _positive_int(owner: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


def _classifier(in_channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    # Channel-wise dropout (Dropout2D) as in the authors' code and mmseg's heads.
    return nn.Sequential(nn.Dropout2D(p=dropout), nn.Conv2D(in_channels, num_classes, 1))


@manager.HEADS.register
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
        _positive_int("DAHead", "in_channels", in_channels)
        _positive_int("DAHead", "num_classes", num_classes)
        inter = in_channels // 4 if inter_channels is None else inter_channels
        _positive_int("DAHead", "inter_channels", inter)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"DAHead: dropout must be in [0, 1), got {dropout!r}")
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

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        pam_feat = self.pam_out(self.pam(self.pam_in(x)))
        cam_feat = self.cam_out(self.cam(self.cam_in(x)))
        logits = [self.fused_cls(pam_feat + cam_feat)]
        if self.training:
            logits += [self.pam_cls(pam_feat), self.cam_cls(cam_feat)]
        return logits


@manager.MODELS.register
class DANet(nn.Layer):
    """DANet semantic segmentation model.

    Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019
    (https://arxiv.org/abs/1809.02983). A dilated backbone (output stride 8)
    feeds its last stage to a :class:`DAHead`; in training an auxiliary FCN
    head (:class:`~paddleseg_ext.models.layers.AuxHead`) on the previous stage
    adds deep supervision, as in mmsegmentation's DANet. Training outputs are
    ``[fused, pam, cam, aux]`` (loss ``coef: [1, 1, 1, 0.4]``), eval outputs
    ``[fused]`` only, without running any auxiliary classifier.

    Args:
        num_classes: K.
        backbone: a built backbone exposing ``feat_channels``.
        backbone_indices: (aux feature index, attention feature index).
        inter_channels: attention branch width; default ``C / 4``.
        enable_auxiliary_loss: build and (in training) run the aux FCN head.
        dropout: dropout probability before every classifier.
        align_corners: for resizing logits to the input size.
        pretrained: path or URL of whole-model weights, or None.

    Shape:
        x: ``[N, 3, H, W]`` -> list of ``[N, K, H, W]`` logits named by
        :attr:`output_names`.
    """

    def __init__(self, num_classes: int, backbone: nn.Layer,
                 backbone_indices: Sequence[int] = (2, 3), inter_channels: Optional[int] = None,
                 enable_auxiliary_loss: bool = True, dropout: float = 0.1,
                 align_corners: bool = False, pretrained: Optional[str] = None) -> None:
        super().__init__()
        self.num_classes = _positive_int("DANet", "num_classes", num_classes)
        if not isinstance(backbone, nn.Layer) or not hasattr(backbone, "feat_channels"):
            raise ValueError("DANet: backbone must be a built backbone layer with "
                             f"`feat_channels`, got {type(backbone).__name__}")
        n_feats = len(backbone.feat_channels)
        idx = tuple(backbone_indices) if isinstance(backbone_indices, (list, tuple)) else ()
        if len(idx) != 2 or any(isinstance(i, bool) or not isinstance(i, int)
                                or not 0 <= i < n_feats for i in idx):
            raise ValueError("DANet: backbone_indices must be two ints in "
                             f"[0, {n_feats}) (aux feature, attention feature), got "
                             f"{backbone_indices!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"DANet: dropout must be in [0, 1), got {dropout!r}")
        self.backbone = backbone
        self.backbone_indices = idx
        self.enable_auxiliary_loss = bool(enable_auxiliary_loss)
        self.align_corners = bool(align_corners)
        aux_ch, head_ch = (backbone.feat_channels[i] for i in idx)
        self.head = DAHead(head_ch, num_classes, inter_channels, float(dropout))
        self.aux_head = (AuxHead(aux_ch, num_classes, dropout=float(dropout))
                         if self.enable_auxiliary_loss else None)
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
            logits.append(self.aux_head(feats[self.backbone_indices[0]]))
        size = spatial_size(x)
        return [resize_to(logit, size, self.align_corners) for logit in logits]
