"""Point geometry of PointRend: sampling at points, uncertainty, point selection.

Shape shorthand used in this module (and by its users, the PointRend head and
:class:`~paddleseg_ext.models.losses.PointCrossEntropyLoss`):

* ``N`` batch size, ``C`` feature channels, ``K`` classes.
* ``H, W`` size of the map being sampled (features, logits or labels).
* ``P`` number of points.
* ``points``: ``[N, P, 2]`` float32, normalised ``(x, y)`` in ``[0, 1]``, in
  the ``align_corners=False`` convention: pixel ``(i, j)`` of an ``H x W`` map
  covers ``[j/W, (j+1)/W) x [i/H, (i+1)/H)`` and its centre is
  ``((j + 0.5) / W, (i + 0.5) / H)``. The same point therefore addresses the
  same image location on maps of any resolution (stride-4 features, coarse
  logits, full-resolution labels).
* ``indices``: ``[N, P]`` int64 positions in a row-major flattened ``H x W``
  grid (``i * W + j``).

Everything here follows Kirillov et al., "PointRend: Image Segmentation as
Rendering", CVPR 2020 (https://arxiv.org/abs/1912.08193), Sec. 3.1-3.2, and
works with dynamic spatial sizes under ``paddle.jit.to_static`` (sizes are
read with ``paddle.shape``, never turned into Python ints).
"""

from __future__ import annotations

from typing import Tuple

import paddle
import paddle.nn.functional as F

__all__ = ["point_sample", "point_sample_nearest", "uncertainty", "sample_training_points",
           "most_uncertain_points", "scatter_points"]


def _check_points(points: paddle.Tensor, fn: str) -> None:
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"{fn}: points must be [N, P, 2] normalised (x, y), got shape "
                         f"{list(points.shape)}")


def point_sample(feats: paddle.Tensor, points: paddle.Tensor,
                 padding_mode: str = "border") -> paddle.Tensor:
    """Bilinearly sample ``feats`` at ``points``.

    Args:
        feats: ``[N, C, H, W]`` features or logits.
        points: ``[N, P, 2]`` normalised ``(x, y)`` (see module doc).

    Returns:
        ``[N, C, P]``. In the outer half pixel (between the border pixel
        centres and the map edge) the border value is used (``"border"``
        padding). The reference code pads with zeros, which fades logits
        towards 0 at the image edge, where the top-2 gap then shrinks and
        the uncertainty sampling piles up points that are not on any boundary.
        ``padding_mode="zeros"`` gives that reference behaviour (PaddleSeg
        2.x's PointRend, whose checkpoints expect it).
    """
    _check_points(points, "point_sample")
    # grid_sample wants [-1, 1] coordinates; with align_corners=False, -1 and
    # 1 are the outer edges of the border pixels, matching the [0, 1] convention.
    grid = points.unsqueeze(2) * 2.0 - 1.0  # [N, P, 1, 2]
    out = F.grid_sample(feats, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.squeeze(3)


def point_sample_nearest(label: paddle.Tensor, points: paddle.Tensor) -> paddle.Tensor:
    """Read an integer map at ``points`` (nearest pixel centre).

    Done by index arithmetic instead of ``grid_sample(mode="nearest")``: labels
    stay exact integers and a point on the far edge (x == 1) reads the last
    pixel instead of the zero padding, which would silently become class 0.

    Args:
        label: ``[N, H, W]`` integer map.
        points: ``[N, P, 2]`` normalised ``(x, y)``.

    Returns:
        ``[N, P]`` values of ``label`` at the pixels containing the points.
    """
    _check_points(points, "point_sample_nearest")
    if label.ndim != 3:
        raise ValueError(f"point_sample_nearest: label must be [N, H, W], got {list(label.shape)}")
    shape = paddle.shape(label)
    h, w = shape[1].astype("float32"), shape[2].astype("float32")
    col = paddle.minimum(paddle.floor(points[:, :, 0] * w), w - 1.0).clip(min=0.0)
    row = paddle.minimum(paddle.floor(points[:, :, 1] * h), h - 1.0).clip(min=0.0)
    flat_idx = (row * w + col).astype("int64")
    return paddle.take_along_axis(label.flatten(1), flat_idx, axis=1)


def uncertainty(logits: paddle.Tensor) -> paddle.Tensor:
    """PointRend's uncertainty: ``-(top1 - top2)`` of the class logits.

    Largest (closest to 0) where the two best classes are nearly tied, i.e.
    along predicted boundaries. Needs at least two classes.

    Args:
        logits: ``[N, K, ...]`` (e.g. ``[N, K, H, W]`` or ``[N, K, P]``).

    Returns:
        ``[N, 1, ...]``, all values <= 0.
    """
    top2 = paddle.topk(logits, k=2, axis=1)[0]
    return top2[:, 1:2] - top2[:, 0:1]


@paddle.no_grad()
def sample_training_points(coarse_logits: paddle.Tensor, num_points: int,
                           oversample_ratio: float, importance_sample_ratio: float,
                           padding_mode: str = "border") -> paddle.Tensor:
    """Uncertainty-biased random points for training (paper Sec. 3.1).

    ``num_points * oversample_ratio`` uniform random candidates are scored by
    the uncertainty of the coarse prediction *interpolated at each candidate*
    (scoring the coarse grid first and then sampling would give a point
    between a -1 and a +1 logit the certainty of its neighbours); the
    ``int(importance_sample_ratio * num_points)`` most uncertain candidates
    are kept and the rest of the ``num_points`` are fresh uniform points, so
    the point head also sees easy regions.

    Args:
        coarse_logits: ``[N, K, h, w]``.
        num_points: P, points per image.
        oversample_ratio: >= 1.
        importance_sample_ratio: in [0, 1].
        padding_mode: of :func:`point_sample`.

    Returns:
        ``[N, P, 2]`` points, no gradient.
    """
    n = coarse_logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    parts = []
    if num_uncertain > 0:
        candidates = paddle.rand([n, num_candidates, 2], dtype="float32")
        scores = uncertainty(point_sample(coarse_logits, candidates, padding_mode)).squeeze(1)  # [N, S]
        idx = paddle.topk(scores, k=num_uncertain, axis=1)[1]  # [N, P_u]
        idx = idx.unsqueeze(-1).tile([1, 1, 2])
        parts.append(paddle.take_along_axis(candidates, idx, axis=1))
    if num_random > 0:
        parts.append(paddle.rand([n, num_random, 2], dtype="float32"))
    return parts[0] if len(parts) == 1 else paddle.concat(parts, axis=1)


def most_uncertain_points(logits: paddle.Tensor,
                          num_points: int) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """The ``min(num_points, H*W)`` most uncertain grid cells (inference).

    Args:
        logits: ``[N, K, H, W]``.
        num_points: requested P; capped at ``H * W`` so tiny inputs work.

    Returns:
        ``(indices [N, P'], points [N, P', 2])``: flat cell indices and the
        normalised centres of those cells, ``P' = min(num_points, H * W)``.
    """
    shape = paddle.shape(logits)
    h, w = shape[2].astype("int64"), shape[3].astype("int64")
    scores = uncertainty(logits).flatten(1)  # [N, H*W]
    # k stays a tensor: with dynamic export shapes H*W is unknown at trace time.
    k = paddle.minimum(h * w, paddle.full([], num_points, dtype="int64"))
    indices = paddle.topk(scores, k=k, axis=1)[1]
    # In the logits' dtype: grid_sample takes points of its input's dtype (float64 runs too).
    dtype = logits.dtype
    hf, wf = h.astype(dtype), w.astype(dtype)
    xs = ((indices % w).astype(dtype) + 0.5) / wf
    ys = ((indices // w).astype(dtype) + 0.5) / hf
    return indices, paddle.stack([xs, ys], axis=-1)


def scatter_points(logits: paddle.Tensor, indices: paddle.Tensor,
                   values: paddle.Tensor) -> paddle.Tensor:
    """Write per-point predictions back into a logit map.

    ``put_along_axis`` on the flattened spatial axis: each image gets its own
    indices (``paddle.scatter`` only indexes the first axis, so it would need
    manual batch/channel offsets).

    Args:
        logits: ``[N, K, H, W]``.
        indices: ``[N, P]`` flat positions (from :func:`most_uncertain_points`).
        values: ``[N, K, P]``.

    Returns:
        ``[N, K, H, W]``: ``logits`` with the P positions replaced by ``values``.
    """
    shape = paddle.shape(logits)
    flat = logits.flatten(2)  # [N, K, H*W]
    index = indices.unsqueeze(1).tile([1, values.shape[1], 1])  # [N, K, P]
    out = paddle.put_along_axis(flat, index, values.astype(flat.dtype), axis=2, broadcast=False)
    return out.reshape(shape)
