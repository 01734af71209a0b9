"""ADE20K (SceneParsing / ADEChallengeData2016, 150 classes)."""

from __future__ import annotations

import glob
import os
import numpy as np

from ..cvlibs import manager
from .dataset import check_dir
from .folder_dataset import FilePairs, FolderDataset, reduce_zero_label

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]

_SPLITS = {"train": "training", "val": "validation"}


@manager.DATASETS.register
class ADE20K(FolderDataset):
    """ADE20K scene parsing, 150 classes.

    Layout under ``dataset_root`` (``ADEChallengeData2016``)::

        images/{training,validation}/*.jpg
        annotations/{training,validation}/*.png   (same stem as the image)

    Raw annotation 0 means "other" and becomes ``ignore_index`` (255); raw
    ``k >= 1`` becomes class ``k - 1``. The reduction is done on the raw label
    before any transform (so padding values are never shifted). ``mode`` is
    'train' or 'val'. Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`
    (``ignore_index`` is the label raw 0 becomes).
    """

    NUM_CLASSES = 150
    CLASS_NAMES = ADE20K_CLASSES
    MODES = tuple(_SPLITS)

    def find_files(self) -> FilePairs:
        split = _SPLITS[self.mode]
        img_dir = check_dir(os.path.join(self.dataset_root, "images", split),
                            "ADE20K: image folder", "Expected images/{training,validation}/")
        ann_dir = check_dir(os.path.join(self.dataset_root, "annotations", split),
                            "ADE20K: annotation folder",
                            "Expected annotations/{training,validation}/")
        images = sorted(glob.glob(os.path.join(glob.escape(img_dir), "*.jpg")))
        if not images:
            raise ValueError(f"ADE20K: no *.jpg images found in {img_dir}")
        return self.pair_labels(
            images, lambda img: os.path.join(ann_dir, os.path.splitext(os.path.basename(img))[0]
                                             + ".png"))

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        """Raw 0 -> ignore_index, raw k -> k - 1 (reduce_zero_label)."""
        return reduce_zero_label(label, self.ignore_index)
