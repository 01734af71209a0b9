"""The pictures prediction writes, saying what they show.

Used by ``tools/predict.py`` and the deploy scripts, so both write the same:

- the colour map: a palette PNG whose pixel values are the class ids (readable
  as a label map), no-data pixels transparent; ``legend.png`` beside it in
  the same folder (class id, colour, name for every class);
- the overlay (for people): the prediction blended over the image, no-data
  pixels left as the image, with a legend of the classes it shows (and the
  no-data entry when there is any) drawn to its right.

``legend=False`` writes neither legend.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import cv2
import numpy as np

from .visualize import mask_prediction, nodata_mask, overlay, palette_array, save_color_map
from .visualize_legend import beside, class_names_or_ids, legend_image

LEGEND_FILE = "legend.png"


def class_names_of(config: dict) -> Optional[list]:
    """Class names for pictures: ``val_dataset.class_names`` (or ``train_dataset``'s) in the
    config, else the dataset type's own ``CLASS_NAMES``, else None (pictures say ``class i``)."""
    from ..cvlibs import manager

    for key in ("val_dataset", "train_dataset"):
        ds = config.get(key) or {}
        if ds.get("class_names"):
            return list(ds["class_names"])
        cls = manager.DATASETS.get(ds["type"]) if ds.get("type") in manager.DATASETS else None
        names = getattr(cls, "CLASS_NAMES", None)
        if names:
            return list(names)
    return None


def add_picture_args(parser) -> None:
    """The command-line options of the pictures (predict.py, deploy scripts)."""
    parser.add_argument("--no_legend", dest="legend", action="store_false",
                        help="no legend.png beside the colour maps, no legend beside the overlays")
    parser.add_argument("--nodata", type=float,
                        help="pixels whose every band equals this value hold no data and stay uncoloured "
                             "(default: test_config.nodata of the config, or Deploy.nodata of deploy.yaml)")


def picture_options(args, config: dict) -> dict:
    """``class_names``, ``legend`` and ``nodata`` for :func:`~paddleseg_ext.core.predict.predict`
    from the options of :func:`add_picture_args` and a config dict (training config's
    ``test_config.nodata``, or a deploy.yaml's ``Deploy`` section's ``nodata``/``class_names``)."""
    section = config.get("Deploy") or {}
    nodata = args.nodata
    if nodata is None:
        nodata = (config.get("test_config") or {}).get("nodata", section.get("nodata"))
    names = section.get("class_names") if "Deploy" in config else class_names_of(config)
    return {"class_names": names, "legend": args.legend, "nodata": nodata}


def deploy_picture_keys(config: dict) -> dict:
    """What deploy.yaml's ``Deploy`` section needs for the pictures: ``class_names`` and
    ``nodata`` (from ``test_config``), each only when known."""
    keys = {"class_names": class_names_of(config), "nodata": (config.get("test_config") or {}).get("nodata")}
    return {k: v for k, v in keys.items() if v is not None}


def write_legend(folder: str, num_classes: int, color_map: Sequence[int],
                 class_names: Optional[Sequence[str]] = None) -> str:
    """Write ``folder/legend.png`` listing every class; returns its path."""
    names = class_names_or_ids(class_names, num_classes)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LEGEND_FILE)
    legend = legend_image(names, palette_array(color_map), no_data=True)
    cv2.imwrite(path, cv2.cvtColor(legend, cv2.COLOR_RGB2BGR))
    return path


def apply_nodata(pred: np.ndarray, image: Optional[np.ndarray], nodata: Optional[float]) -> np.ndarray:
    """``pred`` with the pixels where ``image`` (as read, ``H x W [x C]``) holds no data
    (every band equal to ``nodata``) set to the no-data id, so no picture colours them."""
    if nodata is None or image is None:
        return pred
    mask = nodata_mask(image, nodata)
    if mask.shape != pred.shape:
        raise ValueError(f"image {mask.shape} and prediction {pred.shape} differ in size: cannot mark "
                         "its no-data pixels")
    return mask_prediction(pred, mask)


def write_color_maps(items: Sequence, save_dir: str, name_of, color_map: Sequence[int],
                     class_names: Optional[Sequence[str]] = None, legend: bool = True,
                     nodata: Optional[float] = None, img_channels: int = 3) -> List[str]:
    """Write ``save_dir/<name_of(path)>.png`` for each ``(image path, class map)`` of ``items``
    (no-data pixels of the image file uncoloured), and ``save_dir/legend.png``."""
    from ..transforms.loading import read_image

    written = []
    for path, pred in items:
        out = os.path.join(save_dir, name_of(path) + ".png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if nodata is not None:
            pred = apply_nodata(np.asarray(pred), read_image(path, img_channels=img_channels), nodata)
        save_color_map(np.asarray(pred), out, list(color_map))
        written.append(out)
    if legend and written:
        num = len(class_names) if class_names else max(int(np.asarray(p).max()) + 1 for _, p in items)
        write_legend(save_dir, num, color_map, class_names)
    return written


def write_overlay(path: str, image_rgb: np.ndarray, pred: np.ndarray, color_map: Sequence[int],
                  class_names: Optional[Sequence[str]] = None, weight: float = 0.6,
                  legend: bool = True) -> None:
    """The prediction blended over ``image_rgb`` (``H x W x 3`` uint8), no-data pixels left as
    the image, with a legend of the classes shown to its right (``legend=False``: none)."""
    out = overlay(image_rgb, pred, list(color_map), weight)
    if legend:
        present = [int(c) for c in np.unique(pred) if c != 255]
        num = max(present + [len(class_names or []) - 1, 0]) + 1
        names = class_names_or_ids(class_names, num)
        out = beside(out, legend_image(names, palette_array(color_map), present, no_data=bool((pred == 255).any())))
    cv2.imwrite(path, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


__all__ = ["LEGEND_FILE", "add_picture_args", "picture_options", "class_names_of", "deploy_picture_keys",
           "write_legend", "write_color_maps",
           "apply_nodata", "write_overlay", "save_color_map"]
