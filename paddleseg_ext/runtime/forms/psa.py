"""PSANet's attention with a chosen implementation, and PSANet's large-image inference.

:class:`~paddleseg_ext.models.layers.PSAModule` computes the paper's aggregation with the PSA
mask through :func:`paddleseg_ext.ops.psa_mask`. Its forms fix *which* implementation runs,
chosen once by the execution policy when the model is prepared:

* :class:`MaskedPSAModule`: the ``[HW, HW]`` map from a given mask function (the compiled op,
  or pure Paddle; in a traced program the raw compiled op, fetched here, outside the trace,
  so the program calls it and deploy.yaml lists it);
* :class:`FusedPSAModule`: mask, softmax and aggregation in one op without the ``[HW, HW]``
  map (:func:`paddleseg_ext.ops.psa_attention`; the unfused path on small maps in dygraph,
  where it is faster on the CPU).

:class:`InferencePSANet` is PSANet for large images: its backbone keeps only the stage the
head reads, and the bottleneck convolves ``[x, ctx]`` without building their 4096-channel
concatenation (:func:`~.conv.conv2d_over_concat`).
"""

from __future__ import annotations

from typing import List

import paddle

from ...models.layers.psa_block import PSAModule, psa_aggregate
from ...models.layers.resize import resize_to, spatial_size
from ...models.psanet import PSANet
from ...ops import psa_attention, psa_mask
from .conv import conv2d_over_concat

__all__ = ["MaskedPSAModule", "FusedPSAModule", "InferencePSANet", "op_mask", "paddle_mask",
           "op_attention", "paddle_attention"]


def op_mask(attn: paddle.Tensor, direction: int, mh: int, mw: int) -> paddle.Tensor:
    """The compiled PSA mask (in dygraph; loaded, never built here)."""
    return psa_mask(attn, direction, (mh, mw), impl="op")


def paddle_mask(attn: paddle.Tensor, direction: int, mh: int, mw: int) -> paddle.Tensor:
    """The pure-Paddle PSA mask (traces into plain ops: ONNX and op-free programs)."""
    return psa_mask(attn, direction, (mh, mw), impl="paddle")


def op_attention(feat: paddle.Tensor, attn: paddle.Tensor, direction: int, mh: int, mw: int,
                 softmax: bool) -> paddle.Tensor:
    """The compiled fused attention (in dygraph), without normalisation."""
    return psa_attention(feat, attn, direction, 1.0, softmax, (mh, mw), impl="op")


def paddle_attention(feat: paddle.Tensor, attn: paddle.Tensor, direction: int, mh: int, mw: int,
                     softmax: bool) -> paddle.Tensor:
    """The fused attention's chunked pure-Paddle form (no ``[HW, HW]`` map either)."""
    return psa_attention(feat, attn, direction, 1.0, softmax, (mh, mw), impl="paddle")


class MaskedPSAModule(PSAModule):
    """Form of :class:`PSAModule` with a fixed PSA mask implementation.

    Attributes:
        mask_fn: ``mask_fn(attn, direction, mask_h, mask_w) -> [N, HW, h, w]``: the raw compiled
            op's function, :func:`op_mask` or :func:`paddle_mask`.
        custom_ops: the compiled ops a traced program of this layer calls (for deploy.yaml).
    """

    plain_class = PSAModule
    form_attributes = ("mask_fn", "custom_ops")

    def aggregate(self, feat: paddle.Tensor, attn: paddle.Tensor, direction: int) -> paddle.Tensor:
        return psa_aggregate(feat, attn, direction, self.mask_size, compact=self.compact,
                             softmax=self.psa_softmax,
                             normalization_factor=self.normalization_factor,
                             mask_fn=self.mask_fn)


class FusedPSAModule(PSAModule):
    """Form of :class:`PSAModule` whose aggregation is the fused attention op.

    Attributes:
        fused_fn: ``fused_fn(feat, attn, direction, mask_h, mask_w, softmax)`` returning the
            un-normalised aggregation (or the raw op's ``(out, stats)``).
        mask_fn: the mask used on maps of at most ``min_positions`` positions.
        min_positions: below this many positions the unfused path runs (dygraph only: a
            traced program has no static size, and gets 0).
        custom_ops: as :class:`MaskedPSAModule`.
    """

    plain_class = PSAModule
    form_attributes = ("fused_fn", "mask_fn", "min_positions", "custom_ops")

    def aggregate(self, feat: paddle.Tensor, attn: paddle.Tensor, direction: int) -> paddle.Tensor:
        size = spatial_size(feat)
        small = (self.min_positions and not isinstance(size, paddle.Tensor)
                 and size[0] * size[1] <= self.min_positions)
        if self.compact or small:
            return psa_aggregate(feat, attn, direction, self.mask_size, compact=self.compact,
                                 softmax=self.psa_softmax,
                                 normalization_factor=self.normalization_factor,
                                 mask_fn=self.mask_fn)
        out = self.fused_fn(feat, attn, direction, self.mask_size[0], self.mask_size[1],
                            self.psa_softmax)
        if isinstance(out, (list, tuple)):  # the raw op also returns its softmax statistics
            out = out[0]
        norm = self.normalization_factor
        return out * (1.0 / norm) if norm != 1.0 else out


class InferencePSANet(PSANet):
    """Form of :class:`PSANet` for inference on large images.

    The backbone keeps only the stage the head reads (the others are freed while later stages
    run), and the bottleneck convolves the PSA module's ``[x, ctx]`` split over its input
    channels instead of building their concatenation.

    Attributes:
        keep_stages: the backbone takes ``keep=`` (ResNet-vd does).
        budget_bytes, winograd: how the bottleneck's parts run (:func:`~.conv.strip_conv2d`).
    """

    plain_class = PSANet
    form_attributes = ("keep_stages", "budget_bytes", "winograd")

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        idx = self.backbone_indices[1]
        feats = self.backbone(x, keep=(idx,)) if self.keep_stages else self.backbone(x)
        y = feats[idx]
        del feats
        if self.psa is None:
            head = self.bottleneck(y)
        else:
            parts = self.psa.forward_parts(y)
            del y
            head = self.bottleneck.after_conv(conv2d_over_concat(
                self.bottleneck._conv, parts, self.budget_bytes, self.winograd))
        logits = [self.cls(self.dropout(head))]
        size = spatial_size(x)
        return [resize_to(logit, size, self.align_corners) for logit in logits]
