"""PointRend (semantic segmentation) on a Semantic FPN decoder."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs import manager
from paddleseg_ext.cvlibs.validators import (BOOL, DROPOUT, FRACTION, NON_NEGATIVE_INT,
                                             NUMBER_AT_LEAST_ONE, POSITIVE_INT, feature_indices,
                                             int_at_least, one_of, optional, validated)
from paddleseg_ext.models.layers import resize_to, spatial_size
from paddleseg_ext.models.layers.fpn import FPN, FPN_UPSAMPLE_RULES, SemanticFPNHead
from paddleseg_ext.models.layers.paddleseg_fpn import PaddleSegFPN, PaddleSegFPNHead
from paddleseg_ext.models.layers.point_geometry import (most_uncertain_points, point_sample,
                                                        sample_training_points, scatter_points)
from paddleseg_ext.utils.pretrained import load_pretrained


#: PointRend's FPN neck + decoder: PaddleSeg 2.x's, or the papers' Semantic FPN.
DECODERS = ("paddleseg", "semantic_fpn")
#: Padding of the point sampling: the border value, or zeros (the reference code's).
PADDING_MODES = ("border", "zeros")


@manager.HEADS.register
@validated(in_channels=POSITIVE_INT, num_classes=POSITIVE_INT, channels=POSITIVE_INT,
           num_fcs=NON_NEGATIVE_INT, coarse_pred_each_layer=BOOL,
           padding_mode=one_of(*PADDING_MODES))
class PointHead(nn.Layer):
    """PointRend's point head: a shared MLP that re-predicts single points.

    Kirillov et al., "PointRend: Image Segmentation as Rendering", CVPR 2020
    (https://arxiv.org/abs/1912.08193), Sec. 3.2: the input of each point is
    its fine-grained feature (bilinearly sampled from a high-resolution map,
    here the stride-4 FPN level) concatenated with the coarse prediction
    sampled at the same point; ``num_fcs`` 1x1 Conv1D + ReLU layers (the
    per-point MLP) follow, and with ``coarse_pred_each_layer`` the coarse
    prediction is concatenated again before every later layer and the
    classifier, keeping the global context that the local feature lacks.

    Args:
        in_channels: channels of the fine-grained feature map.
        num_classes: K.
        channels: width of the MLP (256 in the paper).
        num_fcs: number of MLP layers (3 in the paper).
        coarse_pred_each_layer: concatenate the coarse prediction before
            every layer, not only the first.
        padding_mode: of the point sampling (see
            :func:`~paddleseg_ext.models.layers.point_geometry.point_sample`).

    Shape:
        fine: ``[N, in_channels, H, W]``; coarse: ``[N, K, h, w]``;
        points: ``[N, P, 2]`` normalised (x, y) -> point logits ``[N, K, P]``.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256,
                 num_fcs: int = 3, coarse_pred_each_layer: bool = True,
                 padding_mode: str = "border") -> None:
        super().__init__()
        self.padding_mode = padding_mode
        self.coarse_pred_each_layer = bool(coarse_pred_each_layer)
        extra = num_classes if self.coarse_pred_each_layer else 0
        self.fcs = nn.LayerList()
        c_in = in_channels + num_classes
        for _ in range(num_fcs):
            self.fcs.append(nn.Conv1D(c_in, channels, 1))
            c_in = channels + extra
        # Near-zero classifier init (std 0.001, as detectron2 and mmseg): the point
        # loss starts at ~log(K) instead of being dominated by random logits.
        self.cls = nn.Conv1D(c_in, num_classes, 1,
                             weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 0.001)),
                             bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))

    def forward(self, fine: paddle.Tensor, coarse: paddle.Tensor,
                points: paddle.Tensor) -> paddle.Tensor:
        coarse_pts = point_sample(coarse, points, self.padding_mode)  # [N, K, P]
        y = paddle.concat([point_sample(fine, points, self.padding_mode), coarse_pts], axis=1)
        for fc in self.fcs:
            y = F.relu(fc(y))
            if self.coarse_pred_each_layer:
                y = paddle.concat([y, coarse_pts], axis=1)
        return self.cls(y)


@manager.MODELS.register
@validated(num_classes=int_at_least(2), fpn_channels=POSITIVE_INT, fpn_head_channels=POSITIVE_INT,
           dropout=DROPOUT, point_channels=POSITIVE_INT, point_num_fcs=NON_NEGATIVE_INT,
           coarse_pred_each_layer=BOOL, num_points=POSITIVE_INT,
           oversample_ratio=NUMBER_AT_LEAST_ONE, importance_sample_ratio=FRACTION,
           subdivision_steps=NON_NEGATIVE_INT, subdivision_num_points=POSITIVE_INT,
           align_corners=BOOL, decoder=one_of(*DECODERS),
           fpn_upsample=one_of(*FPN_UPSAMPLE_RULES), point_padding=optional(one_of(*PADDING_MODES)),
           subdivision_cap=BOOL)
class PointRend(nn.Layer):
    """PointRend on Semantic FPN, for semantic segmentation.

    Kirillov et al., "PointRend: Image Segmentation as Rendering", CVPR 2020
    (https://arxiv.org/abs/1912.08193). A :class:`~paddleseg_ext.models.layers.fpn.FPN`
    neck over the four backbone stages feeds a Semantic FPN decoder
    (Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019,
    https://arxiv.org/abs/1901.02446) that gives coarse logits at stride 4.

    * Training: ``num_points`` points per image are drawn with uncertainty
      bias (``oversample_ratio``, ``importance_sample_ratio``; paper Sec.
      3.1) and the :class:`PointHead` predicts them. Outputs:
      ``[coarse logits at input size, (point_logits [N, K, P], points [N, P, 2])]``,
      for ``loss: [CrossEntropyLoss, PointCrossEntropyLoss]``.
    * Inference (adaptive subdivision, Sec. 3.1): ``subdivision_steps`` times
      the logits are upsampled 2x (bilinear, never beyond the input size),
      the ``subdivision_num_points`` most uncertain cells (at most all of
      them) are re-predicted by the point head and written back. Output:
      ``[logits at input size]``. Works under ``paddle.jit.to_static`` with
      dynamic input sizes.

    Use a non-dilated backbone (``output_stride: 32``), as the paper and
    mmsegmentation do; dilated ones also work but cost far more.

    ``decoder`` chooses the FPN neck and decoder: ``"semantic_fpn"`` is the
    papers' (above; this project's recipes), ``"paddleseg"`` (the default,
    so PaddleSeg's own recipe files build its network) is PaddleSeg 2.x's
    (:mod:`~paddleseg_ext.models.layers.paddleseg_fpn`): coarse logits and
    the point head's fine-grained features at the *coarsest* pyramid level,
    and point sampling with zero padding. PaddleSeg's shipped recipes also
    dilate the backbone to output stride 8 (``backbone.output_stride: 8``).

    Args:
        num_classes: K (>= 2: the uncertainty compares the two best classes).
        backbone: a built backbone exposing ``feat_channels`` and ``feat_strides``.
        backbone_indices: the backbone levels fed to the FPN, fine to coarse.
        fpn_channels: FPN width (256).
        fpn_head_channels: width of the Semantic FPN scale heads (128).
        dropout: dropout probability before the coarse classifier (0, as
            PaddleSeg; the paper recipes set 0.1).
        point_channels: width of the point MLP (256).
        point_num_fcs: layers of the point MLP (3).
        coarse_pred_each_layer: see :class:`PointHead`.
        num_points: training points per image (2048).
        oversample_ratio: candidate multiplier for training points (3).
        importance_sample_ratio: fraction of training points chosen by
            uncertainty (0.75).
        subdivision_steps: inference refinement rounds (2).
        subdivision_num_points: points re-predicted per round (8196).
        align_corners: for bilinear resizing of features and logits.
        decoder: ``"paddleseg"`` or ``"semantic_fpn"`` (see above).
        fpn_upsample: the Semantic FPN decoder's upsampling rule (see
            :class:`~paddleseg_ext.models.layers.fpn.SemanticFPNHead`):
            ``"to_next_level"`` (ours) or ``"fixed_x2"`` (mmsegmentation's
            ``FPNHead``). Unused by the ``"paddleseg"`` decoder.
        point_padding: padding of the point sampling, ``"border"`` or
            ``"zeros"`` (the reference code's: mmsegmentation's
            ``point_sample``, PaddleSeg's); None (default) picks ``"zeros"``
            for the ``"paddleseg"`` decoder and ``"border"`` for
            ``"semantic_fpn"``.
        subdivision_cap: each subdivision step doubles the logits' size but
            never beyond the input size (True, ours), or doubles it
            regardless (False: mmsegmentation's ``PointHead.predict``, whose
            last step can overshoot the input by a few pixels when its size is
            not a multiple of 4; the result is resized to the input).
        pretrained: path or URL of whole-model weights, or None.
    """

    def __init__(self, num_classes: int, backbone: nn.Layer,
                 backbone_indices: Sequence[int] = (0, 1, 2, 3), fpn_channels: int = 256,
                 fpn_head_channels: int = 128, dropout: float = 0.0, point_channels: int = 256,
                 point_num_fcs: int = 3, coarse_pred_each_layer: bool = True,
                 num_points: int = 2048, oversample_ratio: float = 3,
                 importance_sample_ratio: float = 0.75, subdivision_steps: int = 2,
                 subdivision_num_points: int = 8196, align_corners: bool = False,
                 decoder: str = "paddleseg", fpn_upsample: str = "to_next_level",
                 point_padding: Optional[str] = None, subdivision_cap: bool = True,
                 pretrained: Optional[str] = None) -> None:
        super().__init__()
        idx = feature_indices("PointRend", backbone, backbone_indices, count=None,
                              meaning="(fine to coarse)", needs=("feat_channels", "feat_strides"))

        self.num_classes = num_classes
        self.backbone = backbone
        self.backbone_indices = idx
        self.align_corners = bool(align_corners)
        self.num_points = num_points
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.subdivision_cap = subdivision_cap

        self.decoder = decoder
        in_channels = [backbone.feat_channels[i] for i in idx]
        if decoder == "paddleseg":
            self.neck = PaddleSegFPN(in_channels, fpn_channels)
            self.fpn_head = PaddleSegFPNHead(fpn_channels, len(idx), fpn_head_channels,
                                             num_classes, dropout, self.align_corners)
        else:
            self.neck = FPN(in_channels, fpn_channels)
            self.fpn_head = SemanticFPNHead(fpn_channels, [backbone.feat_strides[i] for i in idx],
                                            fpn_head_channels, num_classes, dropout,
                                            self.align_corners, fpn_upsample)
        # The point head's fine-grained features: the stride-4 level, or PaddleSeg's coarsest.
        self.fine_level = -1 if decoder == "paddleseg" else 0
        self.padding_mode = point_padding or ("zeros" if decoder == "paddleseg" else "border")
        self.point_head = PointHead(fpn_channels, num_classes, point_channels, point_num_fcs,
                                    coarse_pred_each_layer, self.padding_mode)
        self.pretrained = pretrained
        if pretrained:
            load_pretrained(self, pretrained)

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Names of the outputs ``forward`` returns in the current mode."""
        return ("seg", "point") if self.training else ("seg",)

    def forward(self, x: paddle.Tensor) -> List[Union[paddle.Tensor, Tuple[paddle.Tensor, ...]]]:
        feats = self.backbone(x)
        pyramid = self.neck([feats[i] for i in self.backbone_indices])
        fine = pyramid[self.fine_level]
        coarse = self.fpn_head(pyramid)  # [N, K, h, w] at the fine level's size
        if self.training:
            points = sample_training_points(coarse.detach(), self.num_points,
                                            self.oversample_ratio, self.importance_sample_ratio,
                                            self.padding_mode)
            point_logits = self.point_head(fine, coarse, points)
            return [resize_to(coarse, spatial_size(x), self.align_corners), (point_logits, points)]
        refined = self.subdivide(coarse, fine, paddle.shape(x)[2:])
        return [resize_to(refined, spatial_size(x), self.align_corners)]

    def refine_step(self, logits: paddle.Tensor, fine: paddle.Tensor,
                    coarse: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Re-predict the most uncertain cells of ``logits`` ``[N, K, H, W]``.

        Returns:
            ``(refined [N, K, H, W], indices [N, P'])``: only the cells at
            ``indices`` (flat, ``P' = min(subdivision_num_points, H*W)``) change.
        """
        indices, points = most_uncertain_points(logits, self.subdivision_num_points)
        return scatter_points(logits, indices, self.point_head(fine, coarse, points)), indices

    def subdivide(self, coarse: paddle.Tensor, fine: paddle.Tensor,
                  max_size: paddle.Tensor) -> paddle.Tensor:
        """Adaptive subdivision from the stride-4 ``coarse`` logits.

        Args:
            coarse: ``[N, K, h, w]`` coarse logits.
            fine: ``[N, C, h, w]`` fine-grained features.
            max_size: ``[2]`` int shape tensor, the input (H, W); upsampling
                stops there.
        """
        logits = coarse
        for _ in range(self.subdivision_steps):
            shape = paddle.shape(logits)
            size = shape[2:] * 2
            if self.subdivision_cap:
                size = paddle.minimum(size, max_size.astype(shape.dtype))
            logits = F.interpolate(logits, size=size, mode="bilinear",
                                   align_corners=self.align_corners)
            logits = self.refine_step(logits, fine, coarse)[0]
        return logits
