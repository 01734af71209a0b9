"""Geometric transforms: resizing, padding, cropping, flipping, rotation.

Images use the configured interpolation (bilinear by default); labels and
every other ``gt_fields`` key use nearest-neighbour sampling and the label
padding value.

``trans_info``: every op that changes the size in an exactly reversible way
appends the size *before* it: resizes append ``('resize', (h, w))`` and
:class:`Padding` appends ``('padding', (h, w))``. Random crops, rotations and
flips are training-only and record nothing (they cannot be undone from a size).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..cvlibs import manager
from . import functional as F
from .base import (Size, Transform, _where, apply_to_sample, check_number, check_padding,
                   check_prob, check_size)

PadValue = Union[float, Sequence[float]]


def _fit_label_dtype(arr: np.ndarray, value: float) -> np.ndarray:
    """Upcast a label so the padding value fits its dtype (e.g. 255 in int8)."""
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        if not info.min <= value <= info.max:
            return arr.astype(np.int64)
    return arr


def _resize_sample(data: Dict[str, Any], size: Tuple[int, int], interp: int,
                   record: bool = True) -> Dict[str, Any]:
    h, w = data["img"].shape[:2]
    if record:
        data.setdefault("trans_info", []).append(("resize", (h, w)))
    if (w, h) == tuple(size):
        return data
    return apply_to_sample(data, lambda im: F.resize(im, size, interp),
                            lambda lab: F.resize_nearest(lab, size))


def _check_interp(interp: str, owner: str) -> str:
    if interp != "RANDOM" and interp not in F.INTERP_MODES:
        raise ValueError(f"{owner}: interp must be one of "
                         f"{sorted(F.INTERP_MODES) + ['RANDOM']}, got {interp!r}")
    return interp


def _pick_interp(interp: str) -> int:
    if interp == "RANDOM":
        interp = random.choice(sorted(F.INTERP_MODES))
    return F.INTERP_MODES[interp]


@manager.TRANSFORMS.register
class Resize(Transform):
    """Resize to a fixed size, or to fit it keeping the aspect ratio.

    Args:
        target_size: ``[width, height]`` (an int means square).
        keep_ratio: scale uniformly to the largest size whose long side is at
            most ``max(target_size)`` and short side at most
            ``min(target_size)`` (e.g. ``[2048, 512]`` for ADE20K val).
        size_divisor: round the output width/height up to a multiple of it.
        interp: 'NEAREST', 'LINEAR', 'CUBIC', 'AREA', 'LANCZOS4' or 'RANDOM'.
    """

    def __init__(self, target_size: Size = (512, 512), keep_ratio: bool = False,
                 size_divisor: int = None, interp: str = "LINEAR") -> None:
        self.target_size = check_size(target_size, "target_size", "Resize")
        self.keep_ratio = bool(keep_ratio)
        if size_divisor is not None:
            size_divisor = int(check_number(size_divisor, "size_divisor", "Resize", 0, False))
        self.size_divisor = size_divisor
        self.interp = _check_interp(interp, "Resize")

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = data["img"].shape[:2]
        size = F.rescale_size((w, h), self.target_size) if self.keep_ratio else self.target_size
        if self.size_divisor:
            size = tuple(F.ceil_to_multiple(s, self.size_divisor) for s in size)
        return _resize_sample(data, size, _pick_interp(self.interp))


class _ResizeBySide(Transform):
    """Scale, keeping the aspect ratio, so that one side has a given length.

    Subclasses name the side: ``side_arg`` (their argument, kept as an
    attribute of that name) and ``size_for`` (``(h, w), length -> (w, h)``).
    """

    side_arg: str
    size_for: Callable[[Tuple[int, int], int], Tuple[int, int]]

    def __init__(self, length: int) -> None:
        setattr(self, self.side_arg,
                int(check_number(length, self.side_arg, type(self).__name__, 0, False)))

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        size = self.size_for(data["img"].shape[:2], getattr(self, self.side_arg))
        return _resize_sample(data, size, cv2.INTER_LINEAR)


@manager.TRANSFORMS.register
class ResizeByLong(_ResizeBySide):
    """Scale so the long side equals ``long_size``, keeping the aspect ratio."""

    side_arg, size_for = "long_size", staticmethod(F.size_for_long)

    def __init__(self, long_size: int) -> None:
        super().__init__(long_size)


@manager.TRANSFORMS.register
class ResizeByShort(_ResizeBySide):
    """Scale so the short side equals ``short_size``, keeping the aspect ratio."""

    side_arg, size_for = "short_size", staticmethod(F.size_for_short)

    def __init__(self, short_size: int) -> None:
        super().__init__(short_size)


@manager.TRANSFORMS.register
class ResizeStepScaling(Transform):
    """Scale by a random factor from ``min..max`` in steps of ``scale_step_size``.

    ``scale_step_size=0`` draws the factor uniformly from the range.
    """

    def __init__(self, min_scale_factor: float = 0.75, max_scale_factor: float = 1.25,
                 scale_step_size: float = 0.25) -> None:
        o = "ResizeStepScaling"
        self.min_scale_factor = check_number(min_scale_factor, "min_scale_factor", o, 0, False)
        self.max_scale_factor = check_number(max_scale_factor, "max_scale_factor", o, 0, False)
        self.scale_step_size = check_number(scale_step_size, "scale_step_size", o)
        if self.min_scale_factor > self.max_scale_factor:
            raise ValueError(f"{o}: min_scale_factor ({min_scale_factor}) must not exceed "
                             f"max_scale_factor ({max_scale_factor})")

    def _factor(self) -> float:
        lo, hi, step = self.min_scale_factor, self.max_scale_factor, self.scale_step_size
        if lo == hi:
            return lo
        if step == 0:
            return float(np.random.uniform(lo, hi))
        n = int((hi - lo) / step + 1 + 1e-9)  # + eps: 1.5 / 0.25 may give 5.999...
        return float(np.random.choice(np.linspace(lo, hi, n)))

    def draw_size(self, data: Dict[str, Any]) -> Tuple[int, int]:
        """Draw the factor, record ``trans_info`` and return the new ``(w, h)``.

        The random and bookkeeping half of :meth:`__call__`, shared with the
        fused resize + crop (:func:`fused_pair`), so both draw the same way.
        """
        s = self._factor()
        h, w = data["img"].shape[:2]
        data.setdefault("trans_info", []).append(("resize", (h, w)))
        return max(1, int(round(w * s))), max(1, int(round(h * s)))

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        size = self.draw_size(data)
        return _resize_sample(data, size, cv2.INTER_LINEAR, record=False)


@manager.TRANSFORMS.register
class ResizeRangeScaling(Transform):
    """Scale so the long side is a random integer in ``[min_value, max_value]``."""

    def __init__(self, min_value: int = 400, max_value: int = 600) -> None:
        o = "ResizeRangeScaling"
        self.min_value = int(check_number(min_value, "min_value", o, 0, False))
        self.max_value = int(check_number(max_value, "max_value", o, 0, False))
        if self.min_value > self.max_value:
            raise ValueError(f"{o}: min_value ({min_value}) must not exceed "
                             f"max_value ({max_value})")

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        long_size = int(np.random.randint(self.min_value, self.max_value + 1))
        size = F.size_for_long(data["img"].shape[:2], long_size)
        return _resize_sample(data, size, cv2.INTER_LINEAR)


@manager.TRANSFORMS.register
class RandomPaddingCrop(Transform):
    """Pad (bottom/right) up to ``crop_size`` if needed, then crop at random.

    Args:
        crop_size: ``[width, height]`` of the output.
        im_padding_value: image fill, a number or one per channel.
        label_padding_value: fill for labels and other ``gt_fields``.
        category_max_ratio: if < 1, retry the crop position (up to 10 times)
            until no single class covers more than this share of the
            non-ignored label pixels.
        ignore_index: label value excluded from that share.
    """

    def __init__(self, crop_size: Size = (512, 512), im_padding_value: PadValue = 127.5,
                 label_padding_value: int = 255, category_max_ratio: float = 1.0,
                 ignore_index: int = 255) -> None:
        o = "RandomPaddingCrop"
        self.crop_size = check_size(crop_size, "crop_size", o)
        self.im_padding_value, self.label_padding_value = check_padding(
            im_padding_value, label_padding_value, o)
        self.category_max_ratio = check_number(category_max_ratio, "category_max_ratio", o,
                                               0, False)
        self.ignore_index = int(ignore_index)

    def _position(self, h: int, w: int,
                  label_window: Optional[Callable[[int, int], np.ndarray]]) -> Tuple[int, int]:
        """Draw the crop's ``(top, left)`` in a (padded) ``h x w`` sample.

        ``label_window(top, left)`` gives the label under a candidate window
        (None when there is no label to balance); with ``category_max_ratio``
        < 1 up to 10 positions are tried.
        """
        cw, ch = self.crop_size
        tries = 10 if (self.category_max_ratio < 1.0 and label_window is not None) else 1
        for _ in range(tries):
            top = int(np.random.randint(h - ch + 1))
            left = int(np.random.randint(w - cw + 1))
            if tries == 1:
                break
            window = label_window(top, left)
            _, counts = np.unique(window[window != self.ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < self.category_max_ratio:
                break
        return top, left

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        cw, ch = self.crop_size
        h, w = data["img"].shape[:2]
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h or pad_w:
            lv = self.label_padding_value
            data = self._apply(
                data, lambda im: F.pad(im, pad_h, pad_w, self.im_padding_value),
                lambda lab: F.pad(_fit_label_dtype(lab, lv), pad_h, pad_w, lv))
            h, w = h + pad_h, w + pad_w
        if (h, w) == (ch, cw):
            return data
        label = data.get("label") if "label" in data.get("gt_fields", ()) else None
        top, left = self._position(
            h, w, None if label is None else lambda t, l: F.crop(label, t, l, ch, cw))
        return self._apply(data, lambda im: F.crop(im, top, left, ch, cw),
                           lambda lab: F.crop(lab, top, left, ch, cw))

    def resize_and_crop(self, data: Dict[str, Any], size: Tuple[int, int],
                        interp: int = cv2.INTER_LINEAR,
                        to_float: Optional[Callable[[np.ndarray], np.ndarray]] = None
                        ) -> Dict[str, Any]:
        """Resize the sample to ``size=(w, h)`` and apply this crop, computing
        only the pixels that the crop keeps.

        Same random draws, padding, label dtype and label values as
        ``_resize_sample(data, size, interp, record=False)`` followed by
        ``self(data)``; labels (nearest) are identical and the image is
        :func:`~paddleseg_ext.transforms.functional.resize_window` of it:
        bit-identical where OpenCV computes the bilinear coefficients exactly,
        else within float32 coordinate rounding (see there). At scale 2 this
        resizes about a 16th of what the two steps would.

        ``to_float``: when given, ``data['img']`` is the image as decoded and
        this per-pixel conversion (see
        :func:`~paddleseg_ext.transforms.loading.read_image_lazy`) is applied
        to the source pixels the window needs only, before resizing: the same
        values as converting the whole image first.
        """
        cw, ch = self.crop_size
        src_h, src_w = data["img"].shape[:2]
        sw, sh = int(size[0]), int(size[1])
        same_size = (sw, sh) == (src_w, src_h)  # the resize step would do nothing at all
        pad_h, pad_w = max(ch - sh, 0), max(cw - sw, 0)
        lv = self.label_padding_value
        keys = [k for k in data.get("gt_fields", ()) if data.get(k) is not None]
        if pad_h or pad_w:
            for key in keys:
                data[key] = _fit_label_dtype(data[key], lv)

        def window(arr: np.ndarray, top: int, left: int, is_img: bool) -> np.ndarray:
            # The crop window of pad(resize(arr)): real pixels, then bottom/right padding
            # (padding only exists when the window spans that whole axis).
            rows, cols = min(ch, sh - top), min(cw, sw - left)
            if same_size:
                part = F.crop(arr, top, left, rows, cols)
                if is_img and to_float is not None:
                    part = to_float(part)
            elif is_img:
                part = F.resize_window(arr, (sw, sh), top, left, rows, cols, interp, to_float)
            else:
                part = F.resize_nearest_window(arr, (sw, sh), top, left, rows, cols)
            if is_img:
                return F.pad(part, ch - rows, cw - cols, self.im_padding_value)
            return F.pad(part, ch - rows, cw - cols, lv)

        h, w = sh + pad_h, sw + pad_w
        if (h, w) == (ch, cw):
            top = left = 0
        else:
            label = data.get("label") if "label" in keys else None
            top, left = self._position(
                h, w, None if label is None else lambda t, l: window(label, t, l, False))
        data["img"] = window(data["img"], top, left, True)
        for key in keys:
            data[key] = window(data[key], top, left, False)
        return data


def _plain(t: Any, cls: type) -> bool:
    """``t`` is a ``cls`` whose ``__call__`` is not overridden (safe to fuse)."""
    return isinstance(t, cls) and type(t).__call__ is cls.__call__


def fused_pair(first: Any, second: Any) -> Optional[Callable[..., Dict[str, Any]]]:
    """One callable doing ``second(first(data))`` faster, or None if there is none.

    The callable is ``fn(data, to_float=None)``; ``to_float`` is as in
    :meth:`RandomPaddingCrop.resize_and_crop`.

    :class:`ResizeStepScaling` directly followed by :class:`RandomPaddingCrop`
    (the usual training pair) becomes one step that resizes only the crop
    window (:meth:`RandomPaddingCrop.resize_and_crop`): at scale 2 the full
    resize of a 2048x1024 image makes 4096x2048 pixels, of which a 1024x512
    crop keeps a 16th.
    The random draws (scale, then top, then left) are those of the two
    transforms run one after the other, so a seeded run gives the same samples
    fused or not, and resumes reproduce. :class:`~paddleseg_ext.transforms.Compose`
    uses this; each transform called alone still does its whole resize or crop.
    """
    if _plain(first, ResizeStepScaling) and _plain(second, RandomPaddingCrop):
        return lambda data, to_float=None: second.resize_and_crop(
            data, first.draw_size(data), cv2.INTER_LINEAR, to_float)
    return None


class _RandomFlip(Transform):
    """Mirror image and label with probability ``prob`` along the axis of ``flip``."""

    flip: Callable[[np.ndarray], np.ndarray]

    def __init__(self, prob: float) -> None:
        self.prob = check_prob(prob, "prob", type(self).__name__)

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        if random.random() < self.prob:
            data = self._apply(data, self.flip, self.flip)
        return data


@manager.TRANSFORMS.register
class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right with probability ``prob``."""

    flip = staticmethod(F.horizontal_flip)

    def __init__(self, prob: float = 0.5) -> None:
        super().__init__(prob)


@manager.TRANSFORMS.register
class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom with probability ``prob``."""

    flip = staticmethod(F.vertical_flip)

    def __init__(self, prob: float = 0.1) -> None:
        super().__init__(prob)


@manager.TRANSFORMS.register
class RandomRotation(Transform):
    """Rotate by a random angle in ``[-max_rotation, max_rotation]`` degrees.

    The canvas grows to hold the whole rotated image (PaddleSeg behaviour);
    follow with a crop/resize when fixed-size batches are needed. Corners are
    filled with the padding values.
    """

    def __init__(self, max_rotation: float = 15, im_padding_value: PadValue = 127.5,
                 label_padding_value: int = 255) -> None:
        o = "RandomRotation"
        self.max_rotation = check_number(max_rotation, "max_rotation", o)
        self.im_padding_value, self.label_padding_value = check_padding(
            im_padding_value, label_padding_value, o)

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        if self.max_rotation <= 0:
            return data
        angle = float(np.random.uniform(-self.max_rotation, self.max_rotation))
        m, size = F.rotation_matrix(data["img"].shape[:2], angle)
        lv = self.label_padding_value
        return self._apply(
            data, lambda im: F.warp_affine(im, m, size, self.im_padding_value),
            lambda lab: F.warp_affine_nearest(_fit_label_dtype(lab, lv), m, size, lv))


@manager.TRANSFORMS.register
class Padding(Transform):
    """Pad bottom/right to ``target_size``; records ``('padding', (h, w))``.

    Raises (at call time) ``ValueError`` when the image is larger than
    ``target_size``: put a resize before it.
    """

    def __init__(self, target_size: Size, im_padding_value: PadValue = 127.5,
                 label_padding_value: int = 255) -> None:
        o = "Padding"
        self.target_size = check_size(target_size, "target_size", o)
        self.im_padding_value, self.label_padding_value = check_padding(
            im_padding_value, label_padding_value, o)

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = data["img"].shape[:2]
        tw, th = self.target_size
        if h > th or w > tw:
            raise ValueError(
                f"Padding: image size (w={w}, h={h}){_where(data)} is larger than "
                f"target_size (w={tw}, h={th}); padding cannot shrink an image, resize first")
        data.setdefault("trans_info", []).append(("padding", (h, w)))
        lv = self.label_padding_value
        return self._apply(
            data, lambda im: F.pad(im, th - h, tw - w, self.im_padding_value),
            lambda lab: F.pad(_fit_label_dtype(lab, lv), th - h, tw - w, lv))
