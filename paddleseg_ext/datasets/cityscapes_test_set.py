"""Base of the test-only sets in Cityscapes' 19 train ids (Dark Zurich, Nighttime Driving)."""

from __future__ import annotations

import glob
import os

from .cityscapes import CITYSCAPES_CLASSES
from .dataset import check_dir
from .folder_dataset import FilePairs, FolderDataset


class CityscapesTestSet(FolderDataset):
    """A set labelled in Cityscapes' train ids that mmsegmentation only tests on.

    mmsegmentation evaluates its Cityscapes checkpoints on these sets (its ``CityscapesDataset``
    subclasses): the images of ``IMG_DIR`` and everything below it ending in ``IMG_SUFFIX``,
    each with the label of the same relative path under ``ANN_DIR`` ending in ``SEG_SUFFIX``
    (19 classes, 255 void). There is no labelled training split in that layout, so ``mode``
    'train' is refused; 'val' reads the labelled test images, 'test' the same images without
    labels. Subclasses set the folders, suffixes and ``TRAIN_HINT``. Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    NUM_CLASSES = 19
    CLASS_NAMES = CITYSCAPES_CLASSES
    MODES = ("train", "val", "test")
    IMG_DIR = ANN_DIR = IMG_SUFFIX = SEG_SUFFIX = ""
    TRAIN_HINT = ""

    def find_files(self) -> FilePairs:
        name = type(self).__name__
        if self.mode == "train":
            raise ValueError(f"{name}: mode 'train' is not available: mmsegmentation's layout of this set "
                             f"has labels only for its test images ({self.IMG_DIR}). {self.TRAIN_HINT}")
        hint = (f"Expected {self.IMG_DIR}/**/*{self.IMG_SUFFIX} and {self.ANN_DIR}/**/*{self.SEG_SUFFIX} "
                "under dataset_root, as mmsegmentation reads them")
        img_dir = check_dir(os.path.join(self.dataset_root, self.IMG_DIR), f"{name}: image folder", hint)
        images = sorted(glob.glob(os.path.join(glob.escape(img_dir), "**", "*" + self.IMG_SUFFIX),
                                  recursive=True))
        if not images:
            raise ValueError(f"{name}: no '*{self.IMG_SUFFIX}' images found in {img_dir}")
        if self.mode == "test":
            return [(img, None) for img in images]
        ann_dir = check_dir(os.path.join(self.dataset_root, self.ANN_DIR), f"{name}: label folder", hint)

        def label_of(img: str) -> str:
            rel = os.path.relpath(img, img_dir)[: -len(self.IMG_SUFFIX)]
            return os.path.join(ann_dir, rel + self.SEG_SUFFIX)

        return self.pair_labels(images, label_of, hint)
