"""Cityscapes (fine annotations, 19 train ids)."""

from __future__ import annotations

import glob
import os
from typing import Any, List, Optional

from ..cvlibs import manager
from .dataset import Dataset, check_dir

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
]

_IMG_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


@manager.DATASETS.register
class Cityscapes(Dataset):
    """Cityscapes with ``*_gtFine_labelTrainIds.png`` labels (19 classes, 255 void).

    Layout under ``dataset_root``::

        leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png
        gtFine/{train,val,test}/<city>/<name>_gtFine_labelTrainIds.png

    The trainId PNGs are made by the official ``cityscapesscripts``
    (``createTrainIdLabelImgs``). Test mode reads images only.

    Args:
        dataset_root: the Cityscapes folder.
        transforms: built transform objects (or a ``Compose``).
        mode: 'train', 'val' or 'test'.
        num_classes: optional; must be 19.
        ignore_index: void label (255).
        edge: add a binary edge map in train mode.
        invalid_label: 'error' or 'ignore' for label values outside the classes
            (see :class:`~paddleseg_ext.datasets.Dataset`).
    """

    NUM_CLASSES = 19
    CLASS_NAMES = CITYSCAPES_CLASSES

    def __init__(self, dataset_root: str, transforms: Any, mode: str = "train",
                 num_classes: Optional[int] = None, ignore_index: int = 255,
                 edge: bool = False, invalid_label: str = "error") -> None:
        self._init_base(dataset_root, transforms, mode, ("train", "val", "test"),
                        num_classes, ignore_index, 3, edge, invalid_label)
        img_dir = check_dir(os.path.join(self.dataset_root, "leftImg8bit", self.mode),
                            "Cityscapes: image folder",
                            "Expected leftImg8bit/{train,val,test}/<city>/*" + _IMG_SUFFIX)
        images = sorted(glob.glob(os.path.join(glob.escape(img_dir), "*", "*" + _IMG_SUFFIX)))
        if not images:
            raise ValueError(f"Cityscapes: no '*{_IMG_SUFFIX}' images found in "
                             f"{img_dir}/<city>/")
        self.file_list: List = []
        missing = []
        for img in images:
            rel = os.path.relpath(img, img_dir)[: -len(_IMG_SUFFIX)]
            label = None
            if self.mode != "test":
                label = os.path.join(self.dataset_root, "gtFine", self.mode, rel + _LABEL_SUFFIX)
                if not os.path.isfile(label):
                    missing.append(label)
            self.file_list.append((img, label))
        if missing:
            raise FileNotFoundError(
                f"Cityscapes: {len(missing)} label file(s) not found, e.g. {missing[0]}. "
                f"Create the *{_LABEL_SUFFIX} files with cityscapesscripts "
                f"(csCreateTrainIdLabelImgs)")
