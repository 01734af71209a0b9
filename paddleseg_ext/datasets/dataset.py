"""Generic file-list dataset and the shared loading logic of all datasets.

A sample is returned as a dict::

    img        CHW float32, transformed
    label      HW int64 (train: transformed with the image, uint8 where every
               class id and ignore_index fit (the trainer casts the batch to
               int64); val: the original label at its own resolution,
               untransformed, so metrics are computed at label resolution;
               test mode: no 'label' key)
    trans_info list of ('resize'|'padding', (h, w)) recorded by the transforms
               (use it to map a prediction back to the original size)
    img_path, label_path   str ('' for label_path in test mode)
    edge       HW int64 binary edge map (train mode with edge=True only)
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle

from ..cvlibs import ConfigError, manager
from ..transforms import Compose
from ..transforms.functional import mask_to_binary_edge
from ..transforms.loading import read_label

MODES = ("train", "val", "test")
INVALID_LABEL_POLICIES = ("error", "ignore")
_MAX_LISTED = 5  # how many missing files an error message lists
logger = logging.getLogger("paddleseg_ext")


def check_mode(mode: str, allowed: Sequence[str], owner: str) -> str:
    """Validate ``mode`` against ``allowed``."""
    if mode not in allowed:
        raise ValueError(f"{owner}: mode must be one of {list(allowed)}, got {mode!r}")
    return mode


def check_dir(path: str, what: str, hint: str = "") -> str:
    """Return ``path`` if it is a directory, else raise FileNotFoundError."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a path string, got {path!r}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}" + (f". {hint}" if hint else ""))
    return path


def _join(root: str, p: str) -> str:
    return os.path.normpath(p if os.path.isabs(p) else os.path.join(root, p))


def _split_line(line: str, sep: str, root: str, allow_single: bool) -> Optional[List[str]]:
    """Split a list line into ``[image, label]`` (or ``[image]``).

    With the default ``' '`` separator a path containing spaces splits into
    too many fields; then every split point is tried and the one whose parts
    both exist as files wins (the whole line as one image path, too, when
    ``allow_single``). Returns None when no unique reading exists.
    """
    parts = line.split(sep)
    if len(parts) <= 2 and all(p.strip() for p in parts):
        return [p.strip() for p in parts]
    hits = []
    for k in range(1, len(parts)):
        a, b = sep.join(parts[:k]).strip(), sep.join(parts[k:]).strip()
        if (a and b and [a, b] not in hits and os.path.isfile(_join(root, a))
                and os.path.isfile(_join(root, b))):
            hits.append([a, b])
    if allow_single and os.path.isfile(_join(root, line)):
        hits.append([line])
    return hits[0] if len(hits) == 1 else None


def read_file_list(list_path: str, dataset_root: str, separator: str = " ",
                   require_label: bool = True) -> List[Tuple[str, Optional[str]]]:
    """Parse an ``image[sep]label`` list file into absolute path pairs.

    Paths are relative to ``dataset_root`` unless absolute. Blank lines are
    skipped. Every listed file must exist.

    Args:
        list_path: the list file.
        dataset_root: base of relative paths.
        separator: field separator (``' '`` by default; use e.g. ``'\\t'`` or
            ``'|'`` if paths contain spaces and cannot be resolved).
        require_label: every line must have a label (train/val); when False
            (test) a line may hold the image only.

    Raises:
        FileNotFoundError: the list file or a listed file is missing (the
            message names the list file, line number and path).
        ValueError: a malformed line or an empty list.
    """
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"file list not found: {list_path}")
    with open(list_path, "r", encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    pairs: List[Tuple[str, Optional[str]]] = []
    missing: List[str] = []
    want = "image" + repr(separator)[1:-1] + "label"
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        parts = _split_line(line, separator, dataset_root, not require_label)
        if parts is None or (require_label and len(parts) != 2):
            extra = (" If paths contain the separator, pick another separator "
                     "(e.g. separator: \"\\t\") for this list." if parts is None else "")
            raise ValueError(
                f"{list_path}, line {lineno}: expected "
                f"'{want}'{'' if require_label else ' or image only'}, got {line!r}.{extra}")
        img = _join(dataset_root, parts[0])
        lab = _join(dataset_root, parts[1]) if len(parts) == 2 else None
        for kind, p in (("image", img), ("label", lab)):
            if p is not None and not os.path.isfile(p):
                missing.append(f"line {lineno}: {kind} {p}")
        pairs.append((img, lab))
    if missing:
        more = f" (and {len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
        raise FileNotFoundError(
            f"{list_path}: {len(missing)} listed file(s) not found (paths are relative to "
            f"dataset_root {dataset_root}): " + "; ".join(missing[:_MAX_LISTED]) + more)
    if not pairs:
        raise ValueError(f"file list {list_path} is empty: no 'image label' lines")
    return pairs


@manager.DATASETS.register
class Dataset(paddle.io.Dataset):
    """A segmentation dataset described by file lists (PaddleSeg ``Dataset``).

    Each line of a list holds ``image<separator>label``, relative to
    ``dataset_root`` or absolute; test lists may give the image only.

    Args:
        dataset_root: folder that relative list paths start from.
        transforms: built transform objects (or a ``Compose``).
        num_classes: number of classes; label values must lie in
            ``[0, num_classes)`` or equal ``ignore_index``.
        mode: 'train', 'val' or 'test'.
        train_path, val_path, test_path: list file of each mode (relative to
            ``dataset_root`` if not found as given).
        separator: field separator of list lines.
        ignore_index: label value that is ignored in loss and metrics.
        img_channels: channels of the images (3 = RGB).
        edge: add a binary ``edge`` map of the transformed label (train mode).
        invalid_label: what a label value outside ``[0, num_classes)`` that is
            not ``ignore_index`` does: ``'error'`` (the default: a ValueError
            naming the file, the values and their pixel counts) or
            ``'ignore'`` (those pixels become ``ignore_index``, with one
            warning per file).
        class_names: one name per class, shown in evaluation tables (default:
            the class ids).

    Raises:
        FileNotFoundError / ValueError / ConfigError at construction for a
        missing root, list or listed file, a bad line, an empty list, a bad
        mode, num_classes or class_names.
    """

    NUM_CLASSES: Optional[int] = None
    CLASS_NAMES: Optional[List[str]] = None

    def __init__(self, dataset_root: str, transforms: Any, num_classes: Optional[int] = None,
                 mode: str = "train", train_path: Optional[str] = None,
                 val_path: Optional[str] = None, test_path: Optional[str] = None,
                 separator: str = " ", ignore_index: int = 255, img_channels: int = 3,
                 edge: bool = False, invalid_label: str = "error",
                 class_names: Optional[Sequence[str]] = None) -> None:
        if class_names is not None:
            if (isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names)
                    or (num_classes is not None and len(class_names) != num_classes)):
                raise ConfigError(f"{type(self).__name__}: class_names must be a list of "
                                  f"num_classes={num_classes} strings, got {class_names!r}")
            self.class_names = list(class_names)
        self._init_base(dataset_root, transforms, mode, MODES, num_classes, ignore_index,
                        img_channels, edge, invalid_label)
        name = type(self).__name__
        if not isinstance(separator, str) or not separator:
            raise ConfigError(f"{name}: separator must be a non-empty string, got {separator!r}")
        self.separator = separator
        list_path = {"train": train_path, "val": val_path, "test": test_path}[self.mode]
        if list_path is None:
            raise ConfigError(f"{name}: mode is '{self.mode}' but {self.mode}_path (the "
                              f"'image label' file list) is not set")
        self.file_list = read_file_list(self._resolve(list_path), self.dataset_root,
                                        separator, require_label=self.mode != "test")

    # ------------------------------------------------------------------ setup
    def _init_base(self, dataset_root: str, transforms: Any, mode: str,
                   modes: Sequence[str], num_classes: Optional[int], ignore_index: int,
                   img_channels: int, edge: bool, invalid_label: str = "error") -> None:
        """Checks and attributes shared by all datasets (subclasses call this
        instead of ``Dataset.__init__`` and then fill ``self.file_list``)."""
        paddle.io.Dataset.__init__(self)
        name = type(self).__name__
        self.mode = check_mode(mode, modes, name)
        self.dataset_root = check_dir(dataset_root, f"{name}: dataset_root")
        fixed = self.NUM_CLASSES
        if num_classes is None:
            if fixed is None:
                raise ConfigError(f"{name}: num_classes is required")
            num_classes = fixed
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
        if fixed is not None and num_classes != fixed:
            raise ConfigError(f"{name}: this dataset has {fixed} classes but num_classes="
                              f"{num_classes} was given; set num_classes: {fixed} (or leave "
                              f"it out)")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ConfigError(f"{name}: ignore_index must be an int, got {ignore_index!r}")
        if 0 <= ignore_index < num_classes:
            raise ConfigError(f"{name}: ignore_index={ignore_index} collides with a class id "
                              f"(classes are 0..{num_classes - 1}); use e.g. 255")
        if invalid_label not in INVALID_LABEL_POLICIES:
            raise ConfigError(f"{name}: invalid_label must be one of {list(INVALID_LABEL_POLICIES)}, "
                              f"got {invalid_label!r}")
        if isinstance(img_channels, bool) or not isinstance(img_channels, int) or img_channels < 1:
            raise ConfigError(f"{name}: img_channels must be a positive int, got {img_channels!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.img_channels = img_channels
        self.edge = bool(edge)
        self.invalid_label = invalid_label
        self._warned_files: set = set()
        if self.CLASS_NAMES is not None and not hasattr(self, "class_names"):
            self.class_names = list(self.CLASS_NAMES)
        elif not hasattr(self, "class_names"):
            self.class_names = None
        if transforms is None:
            transforms = []  # only read the files and convert to CHW / int64
        if isinstance(transforms, Compose):
            if transforms.img_channels != img_channels:
                transforms = Compose(transforms.transforms, transforms.to_rgb, img_channels)
            self.transforms = transforms
        else:
            self.transforms = Compose(transforms, img_channels=img_channels)
        self._check_transforms()

    def _check_transforms(self) -> None:
        """Transform settings that must agree with the dataset (caught at build time):
        label padding values and Normalize's channel count."""
        name = type(self).__name__
        for i, t in enumerate(self.transforms.transforms):
            lv = getattr(t, "label_padding_value", None)
            if lv is not None and lv != self.ignore_index and not 0 <= lv < self.num_classes:
                raise ConfigError(
                    f"{name}: transforms[{i}] {type(t).__name__} has label_padding_value={lv}, which is "
                    f"neither ignore_index={self.ignore_index} nor a class id (0..{self.num_classes - 1}); "
                    f"padded pixels would carry an invalid label. Set label_padding_value: "
                    f"{self.ignore_index}")
            mean = getattr(t, "mean", None)
            if type(t).__name__ == "Normalize" and isinstance(mean, list) and len(mean) != self.img_channels:
                raise ConfigError(
                    f"{name}: transforms[{i}] Normalize has {len(mean)} mean/std values but "
                    f"img_channels={self.img_channels}; give one mean and std per channel")

    def _resolve(self, path: str) -> str:
        """A list path as given, else relative to dataset_root."""
        if os.path.isfile(path) or os.path.isabs(path):
            return path
        return os.path.join(self.dataset_root, path)

    # --------------------------------------------------------------- loading
    def convert_label(self, label: np.ndarray) -> np.ndarray:
        """Hook to map raw label values to training ids (identity here)."""
        return label

    def load_label(self, path: str) -> np.ndarray:
        """Read a label, convert it and check its values.

        Raises:
            ValueError: values outside ``[0, num_classes)`` that are not
                ``ignore_index`` (with ``invalid_label='error'``); the message
                names the file, the values and their pixel counts.
        """
        label = self.convert_label(read_label(path))
        return self.check_label_values(label, path)

    def _bad_values(self, label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Invalid label values and their pixel counts (cheap when there are none)."""
        if not self._may_have_bad_values(label):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if label.dtype in (np.uint8, np.uint16, np.bool_):
            counts = np.bincount(label.ravel(), minlength=1)
            present = np.flatnonzero(counts)
            bad = present[(present >= self.num_classes) & (present != self.ignore_index)]
            return bad, counts[bad]
        mask = ((label < 0) | (label >= self.num_classes)) & (label != self.ignore_index)
        if not mask.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.unique(label[mask], return_counts=True)

    def _may_have_bad_values(self, label: np.ndarray) -> bool:
        """False only when ``label`` surely holds no invalid value (fast screen).

        The common valid case is decided without a histogram: integer labels
        with values in 0..255 (uint8 as read, or the int64 map Compose emits,
        narrowed after a min/max check) are tested with ``cv2.inRange`` over
        the invalid ranges ``[num_classes, 255]`` minus ``ignore_index``, about
        5x cheaper than counting every value. Anything else returns True and
        gets the exact count.
        """
        if label.dtype == np.bool_:
            label = label.view(np.uint8)
        if label.dtype.kind not in "iu" or label.ndim != 2 or not label.size:
            return True
        if label.dtype != np.uint8:
            lo, hi = int(label.min()), int(label.max())
            if lo >= 0 and hi < self.num_classes:
                return False
            if lo < 0 or hi > 255:
                return True
            label = label.astype(np.uint8)
        nc, ig = self.num_classes, self.ignore_index
        if nc > 255:
            return False
        spans = ([(nc, ig - 1), (ig + 1, 255)] if nc <= ig <= 255 else [(nc, 255)])
        return any(cv2.countNonZero(cv2.inRange(label, lo, hi)) for lo, hi in spans if lo <= hi)

    def check_label_values(self, label: np.ndarray, path: str, after: str = "") -> np.ndarray:
        """Check that ``label`` holds only class ids and ``ignore_index``.

        Returns the label, with invalid values set to ``ignore_index`` when
        ``invalid_label='ignore'``; raises ValueError otherwise.
        """
        bad, counts = self._bad_values(label)
        if not bad.size:
            return label
        more = " ..." if bad.size > 10 else ""
        values = ", ".join(str(int(v)) for v in bad[:10]) + more
        pixels = ", ".join(f"{int(v)}: {int(c)}" for v, c in zip(bad[:10], counts[:10])) + more
        what = f"label file {path}" if not after else f"the label of {path} {after}"
        if self.invalid_label == "ignore":
            if path not in self._warned_files:
                self._warned_files.add(path)
                logger.warning("%s has values [%s] outside [0, %d) (pixels per value: %s): set to "
                               "ignore_index=%d (invalid_label: ignore)", what, values, self.num_classes,
                               pixels, self.ignore_index)
            if label.dtype.kind in "iu" and not (np.iinfo(label.dtype).min <= self.ignore_index
                                                 <= np.iinfo(label.dtype).max):
                label = label.astype(np.int64)
            label = label.copy()
            label[np.isin(label, bad)] = self.ignore_index
            return label
        raise ValueError(
            f"{what} has values [{values}] outside [0, {self.num_classes}) that are not "
            f"ignore_index={self.ignore_index} (pixels per value: {pixels}); {type(self).__name__} has "
            f"{self.num_classes} classes. "
            f"Fix the label, set num_classes / ignore_index to match it, or set invalid_label: ignore "
            f"on the dataset to train with those pixels ignored")

    def train_label_dtype(self) -> type:
        """The dtype training labels travel in from the loader workers: uint8 when every
        class id and ``ignore_index`` fits (8x less to send than int64), else int64.
        The trainer casts the batch to int64 for the losses."""
        fits = self.num_classes <= 256 and 0 <= self.ignore_index <= 255
        return np.uint8 if fits else np.int64

    def finish_train_label(self, label: np.ndarray, path: str) -> np.ndarray:
        """Check a transformed training label's values (:meth:`check_label_values`,
        on the values as they are), then narrow it to :meth:`train_label_dtype`."""
        label = self.check_label_values(label, path, "after the transforms")
        return label.astype(self.train_label_dtype(), copy=False)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        img_path, label_path = self.file_list[idx]
        data: Dict[str, Any] = {"img": img_path, "img_path": img_path,
                                "label_path": label_path or "", "trans_info": [],
                                "gt_fields": []}
        if label_path and self.mode != "test":
            data["label"] = self.load_label(label_path)
            if self.mode == "train":
                data["gt_fields"].append("label")
        train = self.mode == "train"
        data = self.transforms(data, label_dtype=None) if train else self.transforms(data)
        if train and isinstance(data.get("label"), np.ndarray):
            data["label"] = self.finish_train_label(data["label"], img_path)
        if self.edge and self.mode == "train" and "label" in data:
            data["edge"] = mask_to_binary_edge(data["label"], radius=2,
                                               ignore_index=self.ignore_index)
        data.pop("gt_fields", None)
        return data

    def __len__(self) -> int:
        return len(self.file_list)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mode={self.mode!r}, samples={len(self)}, "
                f"num_classes={self.num_classes}, root={self.dataset_root!r})")
