"""LandCover: the demo land-cover tiles made by ``tools/data/prepare_landcover.py``."""

from __future__ import annotations

import os
from typing import Any, Optional

from ..cvlibs import manager
from .dataset import Dataset, check_mode

LANDCOVER_CLASSES = ["developed", "agriculture", "herbaceous", "shrubland", "forest",
                     "water", "sediment"]


@manager.DATASETS.register
class LandCover(Dataset):
    """Land-cover tiles from a Landsat-7 scene: 7 classes, 255 = no data.

    Layout under ``dataset_root`` (as written by the converter)::

        images/*.png  labels/*.png  train.txt  val.txt  labels.txt  meta.json

    ``class_names`` is read from ``labels.txt`` (one name per line) when it
    exists, else the built-in names are used.

    Args:
        dataset_root: converter output folder (default ``data/landcover``).
        transforms: built transform objects (or a ``Compose``); None = none.
        mode: 'train' or 'val'.
        num_classes: optional; must be 7.
        ignore_index: no-data label (255).
        edge: add a binary edge map in train mode.
        invalid_label: 'error' or 'ignore' for label values outside the classes
            (see :class:`~paddleseg_ext.datasets.Dataset`).
        img_channels: 3 for the RGB tiles, 6 for the all-band tiles
            (``prepare_landcover.py --bands all``).

    Raises:
        FileNotFoundError: the folder or its lists are missing (run the
            converter first).
        ValueError: ``labels.txt`` does not list 7 names.
    """

    NUM_CLASSES = 7
    CLASS_NAMES = LANDCOVER_CLASSES

    def __init__(self, dataset_root: str = "data/landcover", transforms: Any = None,
                 mode: str = "train", num_classes: Optional[int] = None,
                 ignore_index: int = 255, edge: bool = False,
                 invalid_label: str = "error", img_channels: int = 3) -> None:
        check_mode(mode, ("train", "val"), "LandCover")
        hint = "; make it with: python tools/data/prepare_landcover.py --out " + str(dataset_root)
        if not os.path.isdir(dataset_root):
            raise FileNotFoundError(f"LandCover: dataset_root not found: {dataset_root}{hint}")
        self.class_names = self._read_names(os.path.join(dataset_root, "labels.txt"))
        try:
            super().__init__(dataset_root, transforms, num_classes=num_classes, mode=mode,
                             train_path="train.txt", val_path="val.txt",
                             ignore_index=ignore_index, edge=edge,
                             invalid_label=invalid_label, img_channels=img_channels)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"LandCover: {e}{hint}") from e

    def _read_names(self, path: str) -> list:
        if not os.path.isfile(path):
            return list(LANDCOVER_CLASSES)
        with open(path, "r", encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != self.NUM_CLASSES:
            raise ValueError(f"LandCover: {path} lists {len(names)} class names, expected "
                             f"{self.NUM_CLASSES} (one per line)")
        return names
