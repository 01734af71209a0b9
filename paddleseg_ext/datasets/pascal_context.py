"""PASCAL-Context (Mottaghi et al., CVPR 2014, https://cs.stanford.edu/~roozbeh/pascal-context/)."""

from __future__ import annotations

import os

import numpy as np

from ..cvlibs import manager
from .dataset import check_dir
from .folder_dataset import FilePairs, FolderDataset, reduce_zero_label


@manager.DATASETS.register
class PascalContext(FolderDataset):
    """PASCAL-Context as mmsegmentation's ``tools/dataset_converters/pascal_context.py`` writes it:
    60 classes (0 = background is a class).

    Layout under ``dataset_root`` (``VOCdevkit/VOC2010``)::

        JPEGImages/<id>.jpg
        SegmentationClassContext/<id>.png          (class ids)
        ImageSets/SegmentationContext/{train,val}.txt

    Arguments as :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    NUM_CLASSES = 60
    REDUCE_ZERO_LABEL = False

    def find_files(self) -> FilePairs:
        name = type(self).__name__
        hint = ("dataset_root should be VOCdevkit/VOC2010 as mmsegmentation's "
                "tools/dataset_converters/pascal_context.py leaves it")
        img_dir = check_dir(os.path.join(self.dataset_root, "JPEGImages"), f"{name}: image folder", hint)
        lab_dir = check_dir(os.path.join(self.dataset_root, "SegmentationClassContext"),
                            f"{name}: label folder", hint)
        list_path = os.path.join(self.dataset_root, "ImageSets", "SegmentationContext", self.mode + ".txt")
        if not os.path.isfile(list_path):
            raise FileNotFoundError(f"{name}: id list not found: {list_path}. {hint}")
        with open(list_path, "r", encoding="utf-8-sig") as f:
            ids = [line.split()[0] for line in f if line.strip()]
        if not ids:
            raise ValueError(f"{name}: {list_path} lists no images")
        images = [os.path.join(img_dir, i + ".jpg") for i in ids]
        absent = [p for p in images if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(f"{name}: {len(absent)} image(s) of {list_path} not found, e.g. {absent[0]}")
        return self.pair_labels(images, lambda img: os.path.join(
            lab_dir, os.path.splitext(os.path.basename(img))[0] + ".png"), hint)

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        return reduce_zero_label(label, self.ignore_index) if self.REDUCE_ZERO_LABEL else label


@manager.DATASETS.register
class PascalContext59(PascalContext):
    """PASCAL-Context without its background: 59 classes, raw 0 ignored, raw ``k`` is class
    ``k - 1`` (mmseg's ``PascalContextDataset59``, ``reduce_zero_label=True``)."""

    NUM_CLASSES = 59
    REDUCE_ZERO_LABEL = True
