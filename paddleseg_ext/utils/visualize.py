"""Colour maps and overlays for predictions.

Pixels outside the valid data (see :func:`nodata_mask`) are never coloured as
a class: a colour map stores them as ``NO_DATA`` (255), transparent in the
palette PNG, and an overlay leaves the image there as it is.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image


def get_color_map_list(num_classes: int, custom_color: Optional[Sequence[int]] = None) -> List[int]:
    """A flat ``[r, g, b, r, g, b, ...]`` palette of 256 entries (PASCAL VOC's bit pattern).

    ``custom_color`` (flat RGB list) replaces the first entries.
    """
    num = 256
    cmap = [0] * (num * 3)
    for i in range(num):
        lab, j = i, 0
        while lab:
            cmap[i * 3 + 0] |= ((lab >> 0) & 1) << (7 - j)
            cmap[i * 3 + 1] |= ((lab >> 1) & 1) << (7 - j)
            cmap[i * 3 + 2] |= ((lab >> 2) & 1) << (7 - j)
            j += 1
            lab >>= 3
    if custom_color:
        custom = list(custom_color)
        if len(custom) % 3:
            raise ValueError(f"custom_color must hold r g b triples, got {len(custom)} values")
        cmap[:len(custom)] = custom
    return cmap


def get_pseudo_color_map(pred: np.ndarray, color_map: Optional[List[int]] = None) -> Image.Image:
    """A palette ('P' mode) PNG image of an ``H x W`` class map."""
    img = Image.fromarray(pred.astype(np.uint8), mode="P")
    img.putpalette(color_map or get_color_map_list(256))
    return img


def overlay(image_rgb: np.ndarray, pred: np.ndarray, color_map: List[int], weight: float = 0.6,
            ignore_index: Optional[int] = None) -> np.ndarray:
    """Blend the colour prediction over an RGB uint8 image; returns RGB uint8."""
    palette = palette_array(color_map)
    color = palette[pred.astype(np.int64) % len(palette)]
    out = cv2.addWeighted(image_rgb.astype(np.uint8), 1 - weight, color, weight, 0)
    for skip in (ignore_index, NO_DATA):  # no data stays the image, never a class colour
        if skip is not None:
            out[pred == skip] = image_rgb[pred == skip]
    return out


NO_DATA = 255
NO_DATA_GREY = (128, 128, 128)
STRETCH_PERCENTILES = (2.0, 98.0)


def palette_array(color_map: Sequence[int]) -> np.ndarray:
    """A flat ``[r, g, b, ...]`` palette as a ``K x 3`` uint8 array."""
    return np.asarray(color_map, dtype=np.uint8).reshape(-1, 3)


def nodata_mask(img: np.ndarray, nodata: Optional[float]) -> Optional[np.ndarray]:
    """Where an image holds no data: every band equal to ``nodata`` (NaN matches NaN).

    Args:
        img: ``H x W`` or ``H x W x C`` image as read (before normalisation).
        nodata: the no-data value (e.g. 0 where the dataset marks no data with all bands
            zero, or a GeoTIFF's nodata); None: every pixel is valid.

    Returns:
        ``H x W`` bool (True = no data), or None when ``nodata`` is None.
    """
    if nodata is None:
        return None
    img = np.asarray(img)
    img = img[:, :, None] if img.ndim == 2 else img
    same = np.isnan(img) if np.isnan(nodata) else img == nodata
    return same.all(axis=2)


def mask_prediction(pred: np.ndarray, no_data: Optional[np.ndarray]) -> np.ndarray:
    """``pred`` (H x W class ids) with the no-data pixels set to ``NO_DATA``."""
    if no_data is None or not no_data.any():
        return pred
    if no_data.shape != pred.shape:
        raise ValueError(f"no-data mask {no_data.shape} and prediction {pred.shape} differ in size")
    out = pred.astype(np.uint8, copy=True)
    out[no_data] = NO_DATA
    return out


def save_color_map(pred: np.ndarray, path: str, color_map: List[int]) -> None:
    """Write ``pred`` as a palette PNG whose pixel values are the class ids; ``NO_DATA``
    pixels are transparent (uncoloured), not a class colour."""
    img = get_pseudo_color_map(pred, color_map)
    if (np.asarray(pred) == NO_DATA).any():
        img.save(path, transparency=NO_DATA)
    else:
        img.save(path)


def class_colors(pred: np.ndarray, palette: np.ndarray, no_data: Optional[np.ndarray] = None,
                 grey: Tuple[int, int, int] = NO_DATA_GREY) -> np.ndarray:
    """RGB uint8 picture of class ids; ``no_data`` pixels (and ``NO_DATA`` ids) grey."""
    out = palette[np.asarray(pred).astype(np.int64) % len(palette)]
    bad = np.asarray(pred) == NO_DATA
    if no_data is not None:
        bad = bad | no_data
    out[bad] = grey
    return out


def stretch_bands(img: np.ndarray, bands: Optional[Sequence[int]] = None,
                  percentiles: Tuple[float, float] = STRETCH_PERCENTILES,
                  limits: Optional[Sequence[Tuple[float, float]]] = None) -> np.ndarray:
    """An RGB uint8 picture of chosen bands of an ``H x W x C`` image, each stretched
    linearly from its low to its high percentile (over its finite pixels) to 0..255.

    Args:
        img: ``H x W`` or ``H x W x C``, any numeric type.
        bands: 3 band indices (red, green, blue) or 1 (grey); default ``[0, 1, 2]``
            (``[0]`` with fewer than 3 bands). The caller validates them.
        percentiles: stretch limits.
        limits: ``(low, high)`` per chosen band, used instead of the image's own
            percentiles (a scene stretched alike in every window).
    """
    img = img[:, :, None] if img.ndim == 2 else img
    if bands is None:
        bands = [0, 1, 2] if img.shape[2] >= 3 else [0]
    out = np.empty(img.shape[:2] + (len(bands),), np.uint8)
    for i, b in enumerate(bands):
        band = img[:, :, b].astype(np.float64)
        if limits is not None:
            lo, hi = limits[i]
        else:
            finite = band[np.isfinite(band)]
            lo, hi = np.percentile(finite, percentiles) if finite.size else (0.0, 1.0)
        scaled = (np.nan_to_num(band, nan=lo) - lo) * (255.0 / max(hi - lo, 1e-12))
        out[:, :, i] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.repeat(out, 3, axis=2) if len(bands) == 1 else out
