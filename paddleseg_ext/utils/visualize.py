"""Colour maps and overlays for predictions."""

from __future__ import annotations

from typing import List, Optional, Sequence

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
    palette = np.asarray(color_map, dtype=np.uint8).reshape(-1, 3)
    color = palette[pred.astype(np.int64) % len(palette)]
    out = cv2.addWeighted(image_rgb.astype(np.uint8), 1 - weight, color, weight, 0)
    if ignore_index is not None:
        out[pred == ignore_index] = image_rgb[pred == ignore_index]
    return out
