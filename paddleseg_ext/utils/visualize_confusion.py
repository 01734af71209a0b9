"""The confusion matrix as a picture (for VisualDL): rows = label, columns = prediction.

Each cell is coloured by its share of the row (the label's pixels), white 0 to
dark blue 1, and prints that share in percent; the row names carry the
label's pixel count, so rare classes are visible as such.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from .visualize_legend import FONT, class_names_or_ids

CELL = 34
SCALE = 0.35


def _text(img: np.ndarray, text: str, x: int, y: int, colour=(0, 0, 0)) -> None:
    cv2.putText(img, text.encode("ascii", "replace").decode("ascii"), (x, y), FONT, SCALE, colour, 1,
                cv2.LINE_AA)


def confusion_image(matrix: np.ndarray, class_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """An RGB uint8 picture of a ``K x K`` confusion matrix (rows = label, columns = prediction).

    Args:
        matrix: pixel counts.
        class_names: one per class (default ``class i``).

    Returns:
        ``H x W x 3`` uint8.
    """
    mat = np.asarray(matrix, dtype=np.float64)
    k = mat.shape[0]
    names = class_names_or_ids(class_names, k)
    rows = mat.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rows[:, None] > 0, mat / rows[:, None], 0.0)
    labels = [f"{i} {names[i]} ({int(rows[i])} px)" for i in range(k)]
    left = 8 + max(cv2.getTextSize(t, FONT, SCALE, 1)[0][0] for t in labels)
    top = 34
    img = np.full((top + k * CELL + 8, left + k * CELL + 8, 3), 255, np.uint8)
    _text(img, "rows: label, columns: prediction, % of the row", 4, 12)
    for j in range(k):
        _text(img, str(j), left + j * CELL + CELL // 2 - 4, top - 6)
    for i in range(k):
        y = top + i * CELL
        _text(img, labels[i], 4, y + CELL // 2 + 4)
        for j in range(k):
            x = left + j * CELL
            s = share[i, j]
            colour = (int(255 * (1 - 0.85 * s)), int(255 * (1 - 0.6 * s)), 255 - int(75 * s))
            cv2.rectangle(img, (x, y), (x + CELL - 1, y + CELL - 1), colour, -1)
            cv2.rectangle(img, (x, y), (x + CELL - 1, y + CELL - 1), (200, 200, 200), 1)
            if rows[i] > 0:
                ink = (255, 255, 255) if s > 0.55 else (0, 0, 0)
                _text(img, f"{100 * s:.0f}", x + 6, y + CELL // 2 + 4, ink)
    return img
