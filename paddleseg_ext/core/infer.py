"""Inference helpers: reverse the val transforms, sliding window, multi-scale + flip.

Shapes: ``im`` is ``[N, C, H, W]`` (after the val transforms); logits are
``[N, K, h, w]``; ``trans_info`` is the list recorded by the transforms,
``[('resize', (h, w)) | ('padding', (h, w)), ...]``, each holding the shape
before that op, so reversing walks it backwards back to label resolution.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import paddle
import paddle.nn.functional as F

from paddleseg_ext.models.layers.softmax import channel_softmax
from paddleseg_ext.utils.infer_options import InferOptions

Size = Tuple[int, int]

_OOM_MARKERS = ("out of memory", "resourceexhausted", "resource exhausted", "cudnn_status_alloc_failed",
                "cudaerrormemoryallocation", "fail to alloc memory", "cannot allocate memory")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an out-of-memory error.

    Paddle turns its ``ResourceExhausted`` errors (CPU and GPU allocators)
    into ``MemoryError``; CUDA / cuDNN allocation failures can also surface
    as ``RuntimeError`` / ``OSError`` whose message says so.
    """
    if isinstance(e, MemoryError):
        return True
    if isinstance(e, (RuntimeError, OSError)):
        text = str(e).lower()
        return any(m in text for m in _OOM_MARKERS)
    return False


def _as_pair(v: Union[int, Sequence[int], None], name: str) -> Optional[Size]:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or (w, h), got {v!r}")
    return (int(v[0]), int(v[1]))


def reverse_transform(pred: paddle.Tensor, trans_info: List[Any], mode: str = "bilinear",
                      align_corners: bool = False) -> paddle.Tensor:
    """Map ``pred [N, K, h, w]`` back through ``trans_info`` to the original size
    (``align_corners``: of the bilinear resizes, see :class:`InferOptions`)."""
    for op, shape in reversed(trans_info or []):
        h, w = int(shape[0]), int(shape[1])
        if op == "resize":
            if mode == "nearest":
                pred = F.interpolate(pred.astype("float32"), (h, w), mode="nearest").astype(pred.dtype)
            else:
                pred = F.interpolate(pred, (h, w), mode="bilinear", align_corners=align_corners)
        elif op == "padding":
            pred = pred[:, :, :h, :w]
        else:
            raise ValueError(f"Unknown trans_info op '{op}' (expected 'resize' or 'padding')")
    return pred


def _forward(model: paddle.nn.Layer, im: paddle.Tensor) -> paddle.Tensor:
    logits = model(im)
    if not isinstance(logits, (list, tuple)):
        raise TypeError(f"{type(model).__name__}.forward must return a list of logits, got {type(logits)}")
    return logits[0]


def slide_inference(model: paddle.nn.Layer, im: paddle.Tensor, crop_size: Size, stride: Size) -> paddle.Tensor:
    """Average logits over overlapping ``crop_size`` windows moved by ``stride`` ((w, h) pairs).

    Windows at the right/bottom edge are shifted inside the image so every
    window is full size; an image smaller than a window runs whole.
    """
    h_im, w_im = int(im.shape[-2]), int(im.shape[-1])
    w_crop, h_crop = crop_size
    w_stride, h_stride = stride
    if w_stride <= 0 or h_stride <= 0:
        raise ValueError(f"slide stride must be positive, got {stride}")
    rows = max(int(np.ceil((h_im - h_crop) / h_stride)), 0) + 1
    cols = max(int(np.ceil((w_im - w_crop) / w_stride)), 0) + 1
    total = None
    count = paddle.zeros([1, 1, h_im, w_im], dtype="float32")
    for r in range(rows):
        for c in range(cols):
            h1 = min(r * h_stride, max(h_im - h_crop, 0))
            w1 = min(c * w_stride, max(w_im - w_crop, 0))
            h2, w2 = min(h1 + h_crop, h_im), min(w1 + w_crop, w_im)
            logit = _forward(model, im[:, :, h1:h2, w1:w2])
            if total is None:
                total = paddle.zeros([im.shape[0], logit.shape[1], h_im, w_im], dtype=logit.dtype)
            total[:, :, h1:h2, w1:w2] += logit
            count[:, :, h1:h2, w1:w2] += 1
    return total / count


def inference(model: paddle.nn.Layer, im: paddle.Tensor, trans_info: Optional[List[Any]] = None,
              is_slide: bool = False, crop_size: Any = None, stride: Any = None,
              align_corners: bool = False) -> paddle.Tensor:
    """Logits ``[N, K, H0, W0]`` at the original (pre-transform) resolution (``align_corners``:
    of the resize back to it)."""
    if is_slide:
        crop, strd = _as_pair(crop_size, "crop_size"), _as_pair(stride, "stride")
        if crop is None or strd is None:
            raise ValueError("slide inference needs crop_size and stride (w h)")
        logit = slide_inference(model, im, crop, strd)
    else:
        logit = _forward(model, im)
    return reverse_transform(logit, trans_info or [], align_corners=align_corners)


def aug_inference(model: paddle.nn.Layer, im: paddle.Tensor, trans_info: Optional[List[Any]] = None,
                  scales: Union[float, Sequence[float]] = 1.0, flip_horizontal: bool = False,
                  flip_vertical: bool = False, is_slide: bool = False, crop_size: Any = None,
                  stride: Any = None, align_corners: bool = False) -> paddle.Tensor:
    """Sum of softmax probabilities over scales and flips, at original resolution.

    Returns ``[N, K, H0, W0]`` probabilities (divided by the number of views).
    """
    scales = [scales] if isinstance(scales, (int, float)) else list(scales)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales}")
    h, w = int(im.shape[-2]), int(im.shape[-1])
    flips: List[Optional[int]] = [None]
    if flip_horizontal:
        flips.append(3)
    if flip_vertical:
        flips.append(2)
    total, views = None, 0
    for s in scales:
        size = (max(int(h * s + 0.5), 1), max(int(w * s + 0.5), 1))
        im_s = F.interpolate(im, size, mode="bilinear", align_corners=False) if s != 1.0 else im
        for axis in flips:
            x = paddle.flip(im_s, [axis]) if axis is not None else im_s
            logit = inference(model, x, None, is_slide, crop_size, stride)
            if axis is not None:
                logit = paddle.flip(logit, [axis])
            logit = F.interpolate(logit, (h, w), mode="bilinear", align_corners=False)
            prob = channel_softmax(logit)
            total = prob if total is None else total + prob
            views += 1
    return reverse_transform(total / views, trans_info or [], align_corners=align_corners)


def predict_logits(model: paddle.nn.Layer, img: paddle.Tensor, trans_info: Any,
                   options: InferOptions) -> paddle.Tensor:
    """Logits (or averaged probabilities with ``options.aug_eval``) ``[N, K, H0, W0]`` of
    ``img [N, C, H, W]`` at original resolution (``trans_info``: see the module docstring)."""
    o = options
    if o.aug_eval:
        return aug_inference(model, img, trans_info, o.scales, o.flip_horizontal, o.flip_vertical,
                             o.is_slide, o.crop_size, o.stride, o.align_corners)
    return inference(model, img, trans_info, o.is_slide, o.crop_size, o.stride, o.align_corners)
