"""Batch collation for segmentation samples."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np


def collate_fn(batch: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Collate dataset samples into a batch for ``paddle.io.DataLoader``.

    Arrays of equal shape (``img``, train-mode ``label``, ``edge``) are stacked
    into one numpy array; everything else (``trans_info``, paths, val-mode
    labels of different sizes) stays a per-sample list. Unlike Paddle's
    default collate this keeps ``trans_info`` as ``[[('resize', (h, w)), ...],
    ...]`` per sample.
    """
    out: Dict[str, Any] = {}
    for key in batch[0]:
        values = [sample[key] for sample in batch]
        if (all(isinstance(v, np.ndarray) for v in values)
                and len({v.shape for v in values}) == 1):
            out[key] = np.stack(values)
        else:
            out[key] = values
    return out
