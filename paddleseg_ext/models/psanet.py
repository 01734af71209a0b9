"""PSANet: Point-wise Spatial Attention Network for Scene Parsing."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import paddle
import paddle.nn as nn

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.cvlibs.validators import (BOOL, DROPOUT, NON_NEGATIVE_INT, POSITIVE_INT,
                                             feature_indices, validated)
from paddleseg_ext.models.layers import AuxHead, ConvBNReLU, resize_to, spatial_size
from paddleseg_ext.models.layers.psa_block import (NORMALIZATION_FACTOR, PSA_CONCAT_ORDER,
                                                   PSA_RESIZE_RULE, PSA_TYPE, PSAModule)
from paddleseg_ext.utils.pretrained import load_pretrained

__all__ = ["PSANet"]

_OWNER = "PSANet"
# Channel widths of the authors' head (https://github.com/hszhao/semseg, model/psanet.py).
_PSA_MID_CHANNELS = 512
_HEAD_CHANNELS = 512


@manager.MODELS.register
@validated(num_classes=POSITIVE_INT, mask_h=POSITIVE_INT, mask_w=POSITIVE_INT, psa_type=PSA_TYPE,
           shrink_factor=POSITIVE_INT, normalization_factor=NORMALIZATION_FACTOR,
           psa_softmax=BOOL, use_psa=BOOL, compact=BOOL, enable_auxiliary_loss=BOOL,
           align_corners=BOOL, dropout=DROPOUT,
           psa_concat_order=PSA_CONCAT_ORDER, psa_resize_rule=PSA_RESIZE_RULE,
           psa_proj_padding=NON_NEGATIVE_INT)
class PSANet(nn.Layer):
    """PSANet semantic segmentation model.

    Zhao et al., "PSANet: Point-wise Spatial Attention Network for Scene
    Parsing", ECCV 2018 (https://hszhao.github.io/papers/eccv18_psanet.pdf).
    A dilated backbone feeds its last stage (``[N, 2048, H/8, W/8]`` for
    ResNet-50 os8) to the PSA module
    (:class:`~paddleseg_ext.models.layers.psa_block.PSAModule`: collect and/or
    distribute attention over the whole map, ``-> [N, 4096, H/8, W/8]``), then
    a 3x3 ConvBNReLU bottleneck (512), dropout and a 1x1 classifier. In
    training an FCN auxiliary head on stage 3 adds deep supervision (loss
    weight 0.4 in the paper, set by the loss ``coef``).

    Args:
        num_classes: number of classes K.
        backbone: a built backbone whose forward returns 4 stage features and
            which exposes ``feat_channels``.
        backbone_indices: (aux feature index, PSA feature index).
        mask_h: attention window height (odd or even). ``2h-1`` for the
            shrunk map height ``h`` lets every position see the whole map.
        mask_w: attention window width.
        psa_type: ``'collect'``/0, ``'distribute'``/1 or ``'bi-direction'``/2
            (PaddleSeg's integers are accepted).
        shrink_factor: the PSA branch works on the feature map shrunk
            bilinearly to ``((h-1)//s+1, (w-1)//s+1)`` (1 = no shrink).
        normalization_factor: attention sums are scaled by its inverse; None
            means ``mask_h*mask_w``.
        psa_softmax: softmax over the source positions of each attention map.
        use_psa: False drops the PSA module (an FCN baseline: bottleneck on
            the backbone feature alone).
        compact: attention channels are absolute positions (no mask op);
            needs ``mask_h*mask_w == h*w`` of the shrunk map, i.e. one input
            size.
        enable_auxiliary_loss: build and (in training) run the aux head.
        align_corners: for the final logit resizes (the PSA module's internal
            shrink/expand follows ``psa_resize_rule``).
        dropout: dropout probability before both classifiers.
        psa_concat_order: bi-direction only, the order of the two branch
            contexts fed to the PSA projection: ``'collect_first'`` (the
            authors' code, hszhao/semseg) or ``'distribute_first'``
            (PSANet_paddle, justld/PSANet_paddle, whose published Cityscapes
            checkpoint needs it). Both train the same function class; the
            order decides which checkpoints give the same logits.
        psa_resize_rule: ``'authors'`` (hszhao/semseg: shrink to
            ``(h-1)//2+1`` and expand back with align_corners=True) or
            ``'mmseg'`` (mmsegmentation's ``PSAHead``: that only when both
            sides are odd, else ``h//2`` with align_corners=False for both
            resizes); see :class:`~paddleseg_ext.models.layers.psa_block.PSAModule`.
        psa_proj_padding: zero padding of the PSA module's 1x1 ``proj`` conv:
            0 (ours, the authors') or 1 (mmsegmentation's ``PSAHead``, whose
            checkpoints need it: a 2-pixel-larger context resized back).
        pretrained: path or URL of whole-model weights, or None.

    How the PSA attention runs (the compiled PSA mask, pure Paddle, the fused
    attention op) is the execution policy's choice, applied by
    :func:`paddleseg_ext.runtime.prepare`; a config's ``model.psa_impl`` sets it.

    PSANet_paddle's model is otherwise this network: its ``psa.reduce_layer``,
    ``head.conv_bn_relu`` and ``head.conv`` are our ``psa.reduce``,
    ``bottleneck`` and ``cls`` (its checkpoints convert on load, see
    :mod:`paddleseg_ext.checkpoints.adapters.psanet_paddle`).

    Shape:
        x: ``[N, C_in, H, W]`` -> list of ``[N, K, H, W]`` logits: ``[main,
        aux]`` in training with the aux head, ``[main]`` otherwise (see
        :attr:`output_names`).
    """

    def __init__(self, num_classes: int, backbone: nn.Layer,
                 backbone_indices: Sequence[int] = (2, 3), mask_h: int = 59, mask_w: int = 59,
                 psa_type: Union[str, int] = 2, shrink_factor: int = 2,
                 normalization_factor: Optional[float] = 1.0, psa_softmax: bool = True,
                 use_psa: bool = True, compact: bool = False,
                 enable_auxiliary_loss: bool = True, align_corners: bool = False,
                 dropout: float = 0.1,
                 psa_concat_order: str = "collect_first",
                 psa_resize_rule: str = "authors", psa_proj_padding: int = 0,
                 pretrained: Optional[str] = None) -> None:
        super().__init__()
        # The arguments were checked by @validated, so errors name PSANet and the YAML key.
        self.num_classes = num_classes
        idx = feature_indices(_OWNER, backbone, backbone_indices,
                              meaning="(aux feature, PSA feature)")
        mask_size = (mask_h, mask_w)
        psa_type_id, concat_order = psa_type, psa_concat_order

        self.backbone = backbone
        self.backbone_indices = idx
        self.use_psa = use_psa
        self.enable_auxiliary_loss = enable_auxiliary_loss
        self.align_corners = align_corners
        aux_ch, feat_ch = (backbone.feat_channels[i] for i in idx)

        self.psa = (PSAModule(feat_ch, _PSA_MID_CHANNELS, psa_type_id, mask_size, shrink_factor,
                              normalization_factor, psa_softmax, compact,
                              concat_order=concat_order, resize_rule=psa_resize_rule,
                              proj_padding=psa_proj_padding, align_corners=align_corners)
                    if use_psa else None)
        head_in = self.psa.out_channels if self.psa is not None else feat_ch
        self.bottleneck = ConvBNReLU(head_in, _HEAD_CHANNELS, 3)
        self.dropout = nn.Dropout(p=float(dropout))
        self.cls = nn.Conv2D(_HEAD_CHANNELS, self.num_classes, 1)
        self.aux_head = (AuxHead(aux_ch, self.num_classes, dropout=float(dropout))
                         if enable_auxiliary_loss else None)

        self.pretrained = pretrained
        if pretrained:
            load_pretrained(self, pretrained)

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Names of the outputs ``forward`` returns in the current mode."""
        if self.training and self.aux_head is not None:
            return ("seg", "aux")
        return ("seg",)

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        feats = self.backbone(x)
        y = feats[self.backbone_indices[1]]
        head = self.bottleneck(y if self.psa is None else self.psa(y))
        logits = [self.cls(self.dropout(head))]
        if self.training and self.aux_head is not None:  # deep supervision: training only
            logits.append(self.aux_head(feats[self.backbone_indices[0]]))
        size = spatial_size(x)
        return [resize_to(logit, size, self.align_corners) for logit in logits]
