"""A legend for class colour pictures: one swatch and name per class.

Drawn with OpenCV's Hershey font, so no font file is needed; names are
ASCII (others are replaced by ``?``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
ROW = 14  # pixels per legend row
SWATCH = 10
PAD = 4
NO_DATA_NAME = "no data (not classified)"


def class_names_or_ids(class_names: Optional[Sequence[str]], num_classes: int) -> List[str]:
    """``class_names`` when given (one per class), else ``class 0``, ``class 1``, ..."""
    if class_names:
        return [str(n) for n in class_names]
    return [f"class {i}" for i in range(num_classes)]


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def legend_image(names: Sequence[str], palette: np.ndarray, classes: Optional[Sequence[int]] = None,
                 no_data: bool = False, background: int = 255,
                 no_data_color: Optional[Sequence[int]] = None) -> np.ndarray:
    """An RGB uint8 legend: one row per class (colour swatch, id and name).

    Args:
        names: one name per class id.
        palette: ``K x 3`` uint8 RGB colours (``K >= len(names)``).
        classes: the class ids to list (default: all of ``names``).
        no_data: add a last row for pixels left uncoloured.
        background: grey level of the legend's background.
        no_data_color: RGB swatch of that row (default: none, the background).

    Returns:
        ``H x W x 3`` uint8.
    """
    ids = list(range(len(names))) if classes is None else [int(c) for c in classes]
    labels = [_ascii(f"{i} {names[i]}" if i < len(names) else f"{i}") for i in ids]
    if no_data:
        labels.append(NO_DATA_NAME)
    width = PAD * 3 + SWATCH + max([cv2.getTextSize(t, FONT, FONT_SCALE, 1)[0][0] for t in labels] + [0])
    out = np.full((PAD * 2 + ROW * len(labels), width, 3), background, np.uint8)
    ink = (0, 0, 0) if background > 127 else (255, 255, 255)
    for row, text in enumerate(labels):
        y = PAD + row * ROW
        colour = (tuple(int(c) for c in palette[ids[row] % len(palette)]) if row < len(ids)
                  else None if no_data_color is None else tuple(int(c) for c in no_data_color))
        if colour is not None:
            cv2.rectangle(out, (PAD, y + 1), (PAD + SWATCH - 1, y + SWATCH), colour, -1)
        cv2.rectangle(out, (PAD, y + 1), (PAD + SWATCH - 1, y + SWATCH), ink, 1)
        cv2.putText(out, text, (PAD * 2 + SWATCH, y + SWATCH), FONT, FONT_SCALE, ink, 1, cv2.LINE_AA)
    return out


def beside(image: np.ndarray, legend: np.ndarray, background: int = 255) -> np.ndarray:
    """``image`` (``H x W x 3`` uint8) with ``legend`` to its right, top-aligned; the
    taller of the two sets the height."""
    h = max(image.shape[0], legend.shape[0])
    out = np.full((h, image.shape[1] + legend.shape[1], 3), background, np.uint8)
    out[:image.shape[0], :image.shape[1]] = image
    out[:legend.shape[0], image.shape[1]:] = legend
    return out
