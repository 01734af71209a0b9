"""Base of the public datasets found by their folder layout (Cityscapes, ADE20K, VOC)."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Optional, Tuple

import numpy as np

from .dataset import Dataset

#: ``(image path, label path or None)``, one per sample.
FilePairs = List[Tuple[str, Optional[str]]]


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Raw 0 -> ``ignore_index``, raw ``k`` -> ``k - 1``, raw 255 stays 255.

    The rule of datasets whose raw 0 means "no class" (mmsegmentation's
    ``reduce_zero_label``: ADE20K, Pascal Context 59, LoveDA, Potsdam, Vaihingen).
    """
    out = label.astype(np.int64) - 1
    out[label == 0] = ignore_index
    out[label == 255] = 255
    if 0 <= ignore_index <= 255 and out.max(initial=0) <= 255:
        out = out.astype(np.uint8)  # keep the cheap bincount check and small copies
    return out


class FolderDataset(Dataset):
    """A dataset with a fixed class list whose files are found by its folder layout.

    Subclasses set ``NUM_CLASSES``, ``CLASS_NAMES`` and ``MODES`` and
    implement :meth:`find_files`; the checks and loading are
    :class:`~paddleseg_ext.datasets.Dataset`'s.

    Args:
        dataset_root: the dataset's folder (its layout is in each subclass).
        transforms: built transform objects (or a ``Compose``).
        mode: one of the subclass's ``MODES``.
        num_classes: optional; must be ``NUM_CLASSES``.
        ignore_index: void label (255).
        edge: add a binary edge map in train mode.
        invalid_label: 'error' or 'ignore' for label values outside the classes
            (see :class:`~paddleseg_ext.datasets.Dataset`).
    """

    MODES: Tuple[str, ...] = ("train", "val")

    def __init__(self, dataset_root: str, transforms: Any, mode: str = "train",
                 num_classes: Optional[int] = None, ignore_index: int = 255,
                 edge: bool = False, invalid_label: str = "error") -> None:
        self._init_base(dataset_root, transforms, mode, self.MODES, num_classes, ignore_index,
                        3, edge, invalid_label)
        self.file_list: FilePairs = self.find_files()

    def find_files(self) -> FilePairs:
        """The samples of ``self.mode`` under ``self.dataset_root``.

        Raises:
            FileNotFoundError / ValueError: a folder or file of the layout is
            missing, or there are no samples.
        """
        raise NotImplementedError

    def pair_labels(self, images: Iterable[str], label_of: Callable[[str], Optional[str]],
                    hint: str = "") -> FilePairs:
        """``(image, label_of(image))`` for every image; one error listing how many
        labels are missing (``label_of`` returns None where there is no label)."""
        pairs: FilePairs = []
        missing: List[Tuple[str, str]] = []
        for img in images:
            label = label_of(img)
            if label is not None and not os.path.isfile(label):
                missing.append((label, img))
            pairs.append((img, label))
        if missing:
            label, img = missing[0]
            raise FileNotFoundError(f"{type(self).__name__}: {len(missing)} label file(s) not found, "
                                    f"e.g. {label} (for image {img}){'. ' + hint if hint else ''}")
        return pairs
