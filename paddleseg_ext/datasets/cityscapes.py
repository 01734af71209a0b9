"""Cityscapes (fine annotations, 19 train ids)."""

from __future__ import annotations

import glob
import os
from ..cvlibs import manager
from .dataset import check_dir
from .folder_dataset import FilePairs, FolderDataset

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
]

_IMG_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


@manager.DATASETS.register
class Cityscapes(FolderDataset):
    """Cityscapes with ``*_gtFine_labelTrainIds.png`` labels (19 classes, 255 void).

    Layout under ``dataset_root``::

        leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png
        gtFine/{train,val,test}/<city>/<name>_gtFine_labelTrainIds.png

    The trainId PNGs are made by the official ``cityscapesscripts``
    (``createTrainIdLabelImgs``). ``mode`` is 'train', 'val' or 'test'; test
    mode reads images only. Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    NUM_CLASSES = 19
    CLASS_NAMES = CITYSCAPES_CLASSES
    MODES = ("train", "val", "test")

    def find_files(self) -> FilePairs:
        img_dir = check_dir(os.path.join(self.dataset_root, "leftImg8bit", self.mode),
                            "Cityscapes: image folder",
                            "Expected leftImg8bit/{train,val,test}/<city>/*" + _IMG_SUFFIX)
        images = sorted(glob.glob(os.path.join(glob.escape(img_dir), "*", "*" + _IMG_SUFFIX)))
        if not images:
            raise ValueError(f"Cityscapes: no '*{_IMG_SUFFIX}' images found in "
                             f"{img_dir}/<city>/")

        def label_of(img: str):
            if self.mode == "test":
                return None
            rel = os.path.relpath(img, img_dir)[: -len(_IMG_SUFFIX)]
            return os.path.join(self.dataset_root, "gtFine", self.mode, rel + _LABEL_SUFFIX)

        return self.pair_labels(images, label_of,
                                f"Create the *{_LABEL_SUFFIX} files with cityscapesscripts "
                                "(csCreateTrainIdLabelImgs)")
