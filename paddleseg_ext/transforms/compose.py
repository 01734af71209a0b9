"""Compose: read a sample, run the transforms, emit network-ready arrays."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..cvlibs import ConfigError, manager
from .geometric import fused_pair
from .loading import check_label_array, prepare_image_lazy, read_image_lazy, read_label


@manager.TRANSFORMS.register
class Compose:
    """Read image/label paths, apply ``transforms`` in order, finalise arrays.

    Which keys are transformed like labels is decided by ``data['gt_fields']``
    alone: a training sample lists ``'label'`` there, a validation sample
    leaves it out so its label stays at the original resolution (the dataset
    sets ``gt_fields`` explicitly). When the caller passes a label but no
    ``gt_fields`` key at all, ``['label']`` is assumed (standalone use).

    Output: ``img`` CHW float32; ``label`` HW int64; other ``gt_fields`` int64
    (``label_dtype=None`` on the call keeps their integer dtypes).

    Adjacent transforms with a faster combined form (see
    :func:`~paddleseg_ext.transforms.geometric.fused_pair`, e.g.
    ``ResizeStepScaling`` + ``RandomPaddingCrop``) run as one step with the
    same random draws.

    Args:
        transforms: transform objects (already built; the config builder turns
            ``{type: ...}`` dicts into objects before this is called).
        to_rgb: turn OpenCV's BGR into RGB for 3-channel images read from files.
        img_channels: channels of the image (3 for RGB; others for multi-band).

    Raises:
        ConfigError: ``transforms`` is not a list of callables.
    """

    def __init__(self, transforms: Sequence[Any], to_rgb: bool = True,
                 img_channels: int = 3) -> None:
        if isinstance(transforms, Compose):
            transforms = transforms.transforms
        if not isinstance(transforms, (list, tuple)):
            raise ConfigError(f"Compose: transforms must be a list of transform objects, "
                              f"got {type(transforms).__name__}: {transforms!r}")
        for i, t in enumerate(transforms):
            if isinstance(t, dict):
                raise ConfigError(
                    f"Compose: transforms[{i}] is an unbuilt config dict {t!r}; build it "
                    f"into an object first (the config builder does this for "
                    f"{{type: ...}} entries)")
            if not callable(t):
                raise ConfigError(f"Compose: transforms[{i}] is not callable: {t!r}")
        if not isinstance(img_channels, int) or img_channels < 1:
            raise ConfigError(f"Compose: img_channels must be a positive int, got "
                              f"{img_channels!r}")
        self.transforms: List[Any] = list(transforms)
        self.to_rgb = bool(to_rgb)
        self.img_channels = img_channels

    def load(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """Read ``img``/``label`` given as paths and check their sizes agree."""
        return self._load(data, lazy=False)[0]

    def _load(self, data: Dict[str, Any], lazy: bool
              ) -> Tuple[Dict[str, Any], Optional[Callable[[np.ndarray], np.ndarray]]]:
        """:meth:`load`; with ``lazy`` the image stays as decoded (channel count
        fixed) and the per-pixel rest of the conversion is returned for the
        first step to apply to just the pixels it needs (else None)."""
        if not isinstance(data, dict) or "img" not in data:
            raise TypeError("Compose expects a data dict with an 'img' key (path or "
                            f"HxWxC array), got {type(data).__name__}")
        if "gt_fields" not in data:
            data["gt_fields"] = ["label"] if data.get("label") is not None else []
        data.setdefault("trans_info", [])
        img = data["img"]
        if isinstance(img, str):
            data.setdefault("img_path", img)
            img, finish = read_image_lazy(img, self.to_rgb, self.img_channels)
        elif isinstance(img, np.ndarray):
            # Arrays are taken as already in the wanted channel order.
            img, finish = prepare_image_lazy(img, self.to_rgb, self.img_channels,
                                             data.get("img_path"), bgr_input=False)
        else:
            raise TypeError(f"data['img'] must be a path or an ndarray, got "
                            f"{type(img).__name__}")
        if not lazy:
            img, finish = np.ascontiguousarray(finish(img), dtype=np.float32), None
        data["img"] = img
        label = data.get("label")
        if isinstance(label, str):
            data.setdefault("label_path", label)
            data["label"] = read_label(label)
        elif isinstance(label, np.ndarray):
            data["label"] = check_label_array(label, data.get("label_path"))
        h, w = data["img"].shape[:2]
        for key in ["label"] + [k for k in data["gt_fields"] if k != "label"]:
            arr = data.get(key)
            if isinstance(arr, np.ndarray) and arr.shape[:2] != (h, w):
                raise ValueError(
                    f"image and {key} sizes differ: image {data.get('img_path', '<array>')} "
                    f"is {h}x{w} (HxW) but {key} {data.get(key + '_path', '<array>')} is "
                    f"{arr.shape[0]}x{arr.shape[1]}; they must match pixel for pixel")
        return data, finish

    def __call__(self, data: Dict[str, Any], label_dtype: Any = np.int64) -> Dict[str, Any]:
        """Read, transform and finalise one sample.

        Args:
            data: the sample dict (``img`` and optional ``label`` as paths or arrays).
            label_dtype: dtype of ``label`` and the other ``gt_fields`` on output;
                None keeps each map's integer dtype as the transforms left it
                (a training dataset checks the values, then narrows the label
                for the trip to the trainer: see ``Dataset.finish_train_label``).
        """
        transforms, i = self.transforms, 0
        fused = fused_pair(*transforms[:2]) if len(transforms) > 1 else None
        # A fused first step converts only the image pixels it keeps to float32.
        data, finish = self._load(data, lazy=fused is not None)
        while i < len(transforms):
            t = transforms[i]
            if i > 0:
                fused = fused_pair(t, transforms[i + 1]) if i + 1 < len(transforms) else None
            out = fused(data, finish) if fused is not None else t(data)
            finish = None
            i += 2 if fused is not None else 1
            if not isinstance(out, dict):
                raise TypeError(f"transform {t!r} returned {type(out).__name__}, "
                                f"expected the data dict")
            data = out
        img = data["img"]
        if img.ndim == 2:
            img = img[:, :, None]
        # A no-op copy-wise when the last step (Normalize) already wrote channel-first.
        data["img"] = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
        for key in set(data["gt_fields"]) | {"label"}:
            arr = data.get(key)
            if isinstance(arr, np.ndarray) and (label_dtype is not None or arr.dtype.kind not in "iub"):
                data[key] = arr.astype(label_dtype or np.int64)
        return data

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}], to_rgb={self.to_rgb}, img_channels={self.img_channels})"
