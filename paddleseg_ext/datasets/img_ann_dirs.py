"""Base of the datasets in mmsegmentation's converted layouts (``img_dir/`` and ``ann_dir/``, ...)."""

from __future__ import annotations

import glob
import os

import numpy as np

from .dataset import check_dir
from .folder_dataset import FilePairs, FolderDataset, reduce_zero_label


class ImgAnnDirDataset(FolderDataset):
    """A dataset as mmsegmentation's converters write it (mmseg's ``BaseSegDataset`` layout).

    Layout under ``dataset_root`` (the folder names are class attributes)::

        <IMG_DIR>/<SPLITS[mode]>/<name><IMG_SUFFIX>     (default img_dir/{train,val})
        <ANN_DIR>/<SPLITS[mode]>/<name><SEG_SUFFIX>     (class ids, one channel)

    Subclasses set ``NUM_CLASSES``, ``CLASS_NAMES``, the folders and suffixes,
    ``REDUCE_ZERO_LABEL`` (raw 0 ignored, raw ``k`` is class ``k - 1``) and
    ``CONVERTER``, the mmseg script that writes the layout (named in errors).
    Arguments as :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    IMG_DIR, ANN_DIR = "img_dir", "ann_dir"
    SPLITS = {"train": "train", "val": "val"}
    IMG_SUFFIX = ".png"
    SEG_SUFFIX = ".png"
    REDUCE_ZERO_LABEL = False
    CONVERTER = ""

    def find_files(self) -> FilePairs:
        name, split = type(self).__name__, self.SPLITS[self.mode]
        hint = (f"Expected {self.IMG_DIR}/{split}/ and {self.ANN_DIR}/{split}/ as mmsegmentation's "
                f"{self.CONVERTER} writes them")
        img_dir = check_dir(os.path.join(self.dataset_root, self.IMG_DIR, split),
                            f"{name}: image folder", hint)
        ann_dir = check_dir(os.path.join(self.dataset_root, self.ANN_DIR, split),
                            f"{name}: annotation folder", hint)
        images = sorted(glob.glob(os.path.join(glob.escape(img_dir), "*" + self.IMG_SUFFIX)))
        if not images:
            raise ValueError(f"{name}: no *{self.IMG_SUFFIX} images in {img_dir}")

        def label_of(img: str) -> str:
            stem = os.path.basename(img)[:-len(self.IMG_SUFFIX)]
            return os.path.join(ann_dir, stem + self.SEG_SUFFIX)

        return self.pair_labels(images, label_of, hint)

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        return reduce_zero_label(label, self.ignore_index) if self.REDUCE_ZERO_LABEL else label
