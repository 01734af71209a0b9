"""Pascal VOC 2012 segmentation (21 classes), optionally with SBD augmentation."""

from __future__ import annotations

import os
from ..cvlibs import manager
from .dataset import check_dir
from .folder_dataset import FilePairs, FolderDataset

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]

_MODES = ("train", "val", "trainval", "trainaug")
_AUG_LISTS = ("aug.txt", "train_aug.txt")


@manager.DATASETS.register
class PascalVOC(FolderDataset):
    """Pascal VOC 2012 segmentation.

    Layout under ``dataset_root`` (``VOCdevkit``; ``dataset_root`` may also
    point at the ``VOC2012`` folder itself)::

        VOC2012/JPEGImages/<id>.jpg
        VOC2012/SegmentationClass/<id>.png       (palette PNGs, 255 = border)
        VOC2012/SegmentationClassAug/<id>.png    (trainaug: SBD-converted labels)
        VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
        VOC2012/ImageSets/Segmentation/aug.txt   (or train_aug.txt; trainaug)

    ``mode`` 'train', 'trainval' and 'trainaug' are training splits
    (``self.mode == 'train'``, the split name is in ``self.split``); the other
    is 'val'. Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`
    (``dataset_root`` is the VOCdevkit or VOC2012 folder).
    """

    NUM_CLASSES = 21
    CLASS_NAMES = VOC_CLASSES
    MODES = _MODES

    def find_files(self) -> FilePairs:
        mode = self.split = self.mode
        self.mode = "val" if mode == "val" else "train"
        voc = os.path.join(self.dataset_root, "VOC2012")
        if not os.path.isdir(voc) and os.path.isdir(os.path.join(self.dataset_root,
                                                                 "JPEGImages")):
            voc = self.dataset_root  # root is the VOC2012 folder itself
        voc = check_dir(voc, "PascalVOC: VOC2012 folder",
                        "dataset_root should be the VOCdevkit folder containing VOC2012/")
        sets = os.path.join(voc, "ImageSets", "Segmentation")
        if mode == "trainaug":
            lists = [os.path.join(sets, n) for n in _AUG_LISTS]
            found = [p for p in lists if os.path.isfile(p)]
            if not found:
                raise FileNotFoundError(
                    f"PascalVOC: mode 'trainaug' needs an SBD-augmented id list, none of "
                    f"{lists} exists; create it (train ids + SBD ids minus val ids) together "
                    f"with VOC2012/SegmentationClassAug/")
            list_path, label_dir = found[0], "SegmentationClassAug"
        else:
            list_path, label_dir = os.path.join(sets, mode + ".txt"), "SegmentationClass"
        if not os.path.isfile(list_path):
            raise FileNotFoundError(f"PascalVOC: id list not found: {list_path}")
        img_dir = check_dir(os.path.join(voc, "JPEGImages"), "PascalVOC: image folder")
        lab_dir = check_dir(os.path.join(voc, label_dir), "PascalVOC: label folder")
        pairs: FilePairs = []
        missing = []
        with open(list_path, "r", encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                name = line.strip()
                if not name:
                    continue
                # Some aug lists hold 'JPEGImages/x.jpg SegmentationClassAug/x.png'.
                name = os.path.splitext(os.path.basename(name.split()[0]))[0]
                img = os.path.join(img_dir, name + ".jpg")
                lab = os.path.join(lab_dir, name + ".png")
                for kind, p in (("image", img), ("label", lab)):
                    if not os.path.isfile(p):
                        missing.append(f"line {lineno}: {kind} {p}")
                pairs.append((img, lab))
        if missing:
            raise FileNotFoundError(f"{list_path}: {len(missing)} file(s) not found: "
                                    + "; ".join(missing[:5])
                                    + (" ..." if len(missing) > 5 else ""))
        if not pairs:
            raise ValueError(f"PascalVOC: id list {list_path} is empty")
        return pairs
