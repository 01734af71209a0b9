"""Photometric transforms: colour distortion, blur, normalisation.

They change only ``data['img']`` (expected in the 0..255 range before
:class:`Normalize`); labels and trans_info are untouched.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Sequence

import cv2
import numpy as np

from ..cvlibs import manager
from . import functional as F
from .base import Transform, _where, check_number, check_prob


@manager.TRANSFORMS.register
class RandomDistort(Transform):
    """Random brightness, contrast, saturation, hue and sharpness, in random order.

    Each op runs with its ``*_prob``; its factor is drawn uniformly from
    ``[1 - range, 1 + range]`` (hue: a shift in ``[-hue_range, hue_range]``,
    in PaddleSeg's units of 1/256 turn). Results are clipped to 0..255.
    Images with other than 3 channels get brightness and contrast only
    (saturation, hue and sharpness need RGB).
    """

    def __init__(self, brightness_range: float = 0.5, brightness_prob: float = 0.5,
                 contrast_range: float = 0.5, contrast_prob: float = 0.5,
                 saturation_range: float = 0.5, saturation_prob: float = 0.5,
                 hue_range: float = 18, hue_prob: float = 0.5,
                 sharpness_range: float = 0.5, sharpness_prob: float = 0) -> None:
        o = "RandomDistort"
        settings = {"brightness": (brightness_range, brightness_prob),
                    "contrast": (contrast_range, contrast_prob),
                    "saturation": (saturation_range, saturation_prob),
                    "hue": (hue_range, hue_prob),
                    "sharpness": (sharpness_range, sharpness_prob)}
        for name, (rng, prob) in settings.items():
            setattr(self, f"{name}_range", check_number(rng, f"{name}_range", o))
            setattr(self, f"{name}_prob", check_prob(prob, f"{name}_prob", o))

    def _factor(self, rng: float) -> float:
        return float(np.random.uniform(max(0.0, 1.0 - rng), 1.0 + rng))

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        img = data["img"]
        ops = ["brightness", "contrast"]
        if img.shape[2] == 3:
            ops += ["saturation", "hue", "sharpness"]
        random.shuffle(ops)
        # The input may be the caller's array (or a view of it): the first op
        # that runs makes a new array, later ones may overwrite that one.
        owned = False
        for name in ops:
            if np.random.uniform(0, 1) >= getattr(self, f"{name}_prob"):
                continue
            rng = getattr(self, f"{name}_range")
            if name == "brightness":
                img = F.adjust_brightness(img, self._factor(rng), inplace=owned)
            elif name == "contrast":
                img = F.adjust_contrast(img, self._factor(rng), inplace=owned)
            elif name == "saturation":
                img = F.adjust_saturation(img, self._factor(rng), inplace=owned)
            elif name == "hue":
                img = F.adjust_hue(img, float(np.random.uniform(-rng, rng)), inplace=owned)
            else:
                img = F.adjust_sharpness(img, self._factor(rng), inplace=owned)
            owned = True
        data["img"] = img.astype(np.float32, copy=False)
        return data


_BLUR_TYPES = ("gaussian", "median", "blur", "random")


@manager.TRANSFORMS.register
class RandomBlur(Transform):
    """Blur the image with probability ``prob``, odd kernel size 3..9.

    Args:
        prob: probability of blurring.
        blur_type: 'gaussian', 'median' (kernel 3 or 5, the sizes OpenCV
            supports for float images), 'blur' (box) or 'random' (one of them).
    """

    def __init__(self, prob: float = 0.1, blur_type: str = "gaussian") -> None:
        self.prob = check_prob(prob, "prob", "RandomBlur")
        if blur_type not in _BLUR_TYPES:
            raise ValueError(f"RandomBlur: blur_type must be one of {list(_BLUR_TYPES)}, "
                             f"got {blur_type!r}")
        self.blur_type = blur_type

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        if self.prob <= 0 or np.random.uniform(0, 1) >= self.prob:
            return data
        k = int(np.random.randint(1, 5)) * 2 + 1  # 3, 5, 7, 9
        kind = self.blur_type
        if kind == "random":
            kind = random.choice(_BLUR_TYPES[:3])
        img = data["img"]
        if kind == "gaussian":
            fn = lambda c, s, e: cv2.GaussianBlur(c, (k, k), 0)  # noqa: E731
        elif kind == "median":
            fn = lambda c, s, e: cv2.medianBlur(c, min(k, 5))  # noqa: E731
        else:
            fn = lambda c, s, e: cv2.blur(c, (k, k))  # noqa: E731
        data["img"] = F._per_chunk(img, fn).astype(np.float32, copy=False)
        return data


@manager.TRANSFORMS.register
class Normalize(Transform):
    """``img = (img / max_value - mean) / std`` per channel (band).

    Units: unsigned 8- and 16-bit images reach the transforms in the 0..255
    range (16-bit as ``raw / 257``), so with the default ``max_value: 255``
    ``mean`` and ``std`` are fractions of the type's full range: for 8-bit
    data ``raw / 255``, for 16-bit data ``raw / 65535`` (a 16-bit band with
    mean 1200 and std 300 in raw units takes ``mean: 0.01831``, ``std:
    0.004578``). Signed-integer and float images are read as stored; set
    ``max_value`` to the value that should map to 1 (e.g. 1 for reflectance
    in 0..1, 10000 for scaled surface reflectance) and give mean/std in those
    units.

    Args:
        mean: one value per image channel (band).
        std: one non-zero value per image channel.
        max_value: the pixel value that maps to 1 before ``mean``/``std``.

    Raises:
        ValueError: mean/std not lists of numbers, of different lengths, a
            zero std, a non-positive ``max_value``, or (at call time) a length
            that differs from the image's channel count.
    """

    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), max_value: float = 255.0) -> None:
        for name, v in (("mean", mean), ("std", std)):
            if not isinstance(v, (list, tuple)) or not v or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError(f"Normalize: {name} must be a list of numbers (one per "
                                 f"channel), got {v!r}")
        if len(mean) != len(std):
            raise ValueError(f"Normalize: mean has {len(mean)} values but std has "
                             f"{len(std)}; give one of each per channel")
        if any(s == 0 for s in std):
            raise ValueError(f"Normalize: std must not contain 0, got {list(std)}")
        self.max_value = check_number(max_value, "max_value", "Normalize", low_inclusive=False)
        self.mean = [float(x) for x in mean]
        self.std = [float(x) for x in std]
        self._mean = np.asarray(self.mean, np.float32)
        self._std = np.asarray(self.std, np.float32)

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        c = data["img"].shape[2]
        if c != len(self.mean):
            raise ValueError(
                f"Normalize: mean/std have {len(self.mean)} values but the image"
                f"{_where(data)} has {c} channels; give one mean and std per channel "
                f"(e.g. set them for img_channels={c})")
        # Channel-first buffer behind an HxWxC view: Compose's CHW output is then free.
        data["img"] = F.normalize(data["img"], self._mean, self._std, chw_buffer=True,
                                  max_value=self.max_value)
        return data
