"""One validation sample as a picture: image | ground truth | prediction, with a legend.

VisualDL shows the same samples at every evaluation (see
:class:`~paddleseg_ext.core.visualdl_hook.VisualDLHook`), so the panels of one
sample side by side show what training changed.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from .visualize import NO_DATA_GREY, class_colors, stretch_bands
from .visualize_legend import beside, class_names_or_ids, legend_image

GAP = 4


def sample_panel(img_chw: np.ndarray, label: np.ndarray, pred: np.ndarray, palette: np.ndarray,
                 class_names: Optional[Sequence[str]] = None, ignore_index: int = 255,
                 bands: Optional[Sequence[int]] = None, scale: int = 2) -> np.ndarray:
    """``image | ground truth | prediction`` side by side, then a legend of the classes shown.

    Pixels the label ignores (``ignore_index``: no data, borders) are grey in both class
    pictures: metrics do not count them either.

    Args:
        img_chw: the image as the model saw it (``C x H x W``, normalised): shown as a
            percentile-stretched composite of ``bands`` (default 0, 1, 2; grey for 1 band).
        label: ``H x W`` class ids.
        pred: ``H x W`` predicted class ids.
        palette: ``K x 3`` uint8 RGB class colours.
        class_names: one per class.
        ignore_index: the label's "not labelled" value.
        bands: image bands shown as red, green, blue (or one as grey).
        scale: nearest-neighbour enlargement of small tiles (1: none).

    Returns:
        ``H' x W' x 3`` uint8.
    """
    label = np.asarray(label)
    pred = np.asarray(pred)
    valid = label != ignore_index
    rgb = stretch_bands(np.transpose(np.asarray(img_chw), (1, 2, 0)), bands)
    if rgb.shape[:2] != label.shape:  # val transforms resized the image; labels stay at full size
        rgb = cv2.resize(rgb, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_LINEAR)
    gt = class_colors(label, palette, ~valid)
    pr = class_colors(pred, palette, ~valid)
    h, w = label.shape
    strip = np.full((h, 3 * w + 2 * GAP, 3), 255, np.uint8)
    for k, part in enumerate((rgb, gt, pr)):
        strip[:, k * (w + GAP):k * (w + GAP) + w] = part
    if scale > 1:
        strip = np.repeat(np.repeat(strip, scale, axis=0), scale, axis=1)
    names = class_names_or_ids(class_names, len(palette) if class_names is None else len(class_names))
    shown = sorted(set(np.unique(label[valid]).tolist()) | set(np.unique(pred[valid]).tolist()))
    return beside(strip, legend_image(names, palette, shown, no_data=not valid.all(),
                                           no_data_color=NO_DATA_GREY))
