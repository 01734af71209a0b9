"""RandomWindows: a training set of random windows drawn from one large scene."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..cvlibs import ConfigError, manager
from ..transforms.base import check_size
from ..transforms.functional import mask_to_binary_edge
from ..transforms.loading import read_image
from .dataset import Dataset, check_mode

_MAX_DRAWS = 20  # windows tried per sample before taking the least empty one


@manager.DATASETS.register
class RandomWindows(Dataset):
    """Random ``crop_size`` windows of one scene (image + label), a new one per sample.

    Remote-sensing scenes are single large rasters: instead of a fixed set
    of tiles, every training sample is a window at a random position, so
    each epoch sees different crops of the whole training area. The window
    is drawn from numpy's global generator, which the training loader seeds
    per sample from ``(seed, epoch, index)``: the windows of a run are a pure
    function of its seed, with or without workers, and after a resume.
    Windows never leave the given files, so a scene split into a training
    part and a validation part (``tools/data/prepare_landcover.py --split
    halves`` writes the training part as its own file, a margin away from
    the validation part) keeps the two spatially disjoint.

    The scene is read once, at construction (any format of
    :func:`~paddleseg_ext.transforms.read_image`: PNG, multi-band TIFF,
    ``.npy``). ``file_list`` holds the one ``(image, label)`` pair (what
    tools such as the per-pixel baseline read).

    Args:
        dataset_root: folder that ``image_path`` / ``label_path`` are relative to.
        image_path: the scene image (``HxW`` or ``HxWxC``).
        label_path: its class-id map, same height and width.
        transforms: applied to each window (flips, Normalize, ...); the
            window already has ``crop_size``, so no crop is needed.
        num_classes: number of classes.
        crop_size: window size, ``int`` or ``[width, height]``.
        samples_per_epoch: length of the dataset (windows per epoch).
        mode: only ``'train'`` (validate on fixed tiles or the whole part).
        ignore_index: label value ignored in loss and metrics (no data).
        img_channels: bands of the image.
        max_ignore_fraction: a window with a larger share of ``ignore_index``
            pixels is drawn again (up to 20 draws; then the emptiest is kept).
        edge: add a binary ``edge`` map (as :class:`Dataset`).
        invalid_label: ``'error'`` or ``'ignore'`` (as :class:`Dataset`).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: sizes differ, the scene is smaller than the window, or
            no window has few enough ignored pixels.
        ConfigError: bad ``crop_size`` / ``samples_per_epoch`` / fractions.
    """

    def __init__(self, dataset_root: str, image_path: str, label_path: str, transforms: Any = None,
                 num_classes: Optional[int] = None, crop_size: Union[int, Sequence[int]] = 64,
                 samples_per_epoch: int = 512, mode: str = "train", ignore_index: int = 255,
                 img_channels: int = 3, max_ignore_fraction: float = 0.5, edge: bool = False,
                 invalid_label: str = "error") -> None:
        name = type(self).__name__
        self._init_base(dataset_root, transforms, check_mode(mode, ("train",), name), ("train",),
                        num_classes, ignore_index, img_channels, edge, invalid_label)
        try:
            self.crop_size: Tuple[int, int] = check_size(crop_size, "crop_size", name)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if isinstance(samples_per_epoch, bool) or not isinstance(samples_per_epoch, int) or samples_per_epoch < 1:
            raise ConfigError(f"{name}: samples_per_epoch must be a positive int, got {samples_per_epoch!r}")
        if isinstance(max_ignore_fraction, bool) or not isinstance(max_ignore_fraction, (int, float)) \
                or not 0 <= max_ignore_fraction <= 1:
            raise ConfigError(f"{name}: max_ignore_fraction must be a number in [0, 1], got "
                              f"{max_ignore_fraction!r}")
        self.samples_per_epoch = samples_per_epoch
        self.max_ignore_fraction = float(max_ignore_fraction)
        img_file, label_file = (self._resolve(p) for p in (image_path, label_path))
        for what, p in (("image_path", img_file), ("label_path", label_file)):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{name}: {what} not found: {p}")
        self.file_list = [(img_file, label_file)]
        self.image = read_image(img_file, self.transforms.to_rgb, img_channels)
        self.label = self.load_label(label_file)
        (h, w), (cw, ch) = self.image.shape[:2], self.crop_size
        if self.label.shape != (h, w):
            raise ValueError(f"{name}: image {img_file} is {h}x{w} (HxW) but label {label_file} is "
                             f"{self.label.shape[0]}x{self.label.shape[1]}; they must match pixel for pixel")
        if h < ch or w < cw:
            raise ValueError(f"{name}: scene {img_file} is {h}x{w} (HxW), smaller than crop_size "
                             f"{cw}x{ch} (WxH)")
        # Integral image of ignored pixels: a window's ignored count in O(1).
        ignored = np.pad((self.label == ignore_index).astype(np.int64), ((1, 0), (1, 0)))
        self._ignored = ignored.cumsum(0).cumsum(1)
        if self._ignored_fraction(*self._best_corner()) > self.max_ignore_fraction:
            raise ValueError(f"{name}: every {cw}x{ch} window of {label_file} has more than "
                             f"{self.max_ignore_fraction:.0%} ignore_index={ignore_index} pixels; use a "
                             f"smaller crop_size or a larger max_ignore_fraction")

    def _ignored_fraction(self, y: int, x: int) -> float:
        cw, ch = self.crop_size
        s = self._ignored
        n = s[y + ch, x + cw] - s[y, x + cw] - s[y + ch, x] + s[y, x]
        return float(n) / (cw * ch)

    def _best_corner(self) -> Tuple[int, int]:
        """Top-left corner of the window with the fewest ignored pixels (a construction-time check)."""
        cw, ch = self.crop_size
        s = self._ignored
        counts = s[ch:, cw:] - s[:-ch, cw:] - s[ch:, :-cw] + s[:-ch, :-cw]
        y, x = np.unravel_index(int(np.argmin(counts)), counts.shape)
        return int(y), int(x)

    def draw_window(self) -> Tuple[int, int]:
        """Top-left ``(y, x)`` of a random window from numpy's global generator (seeded per
        sample by the training loader): the first of up to 20 draws with at most
        ``max_ignore_fraction`` ignored pixels, else the least empty of them."""
        h, w = self.label.shape
        cw, ch = self.crop_size
        best, best_frac = (0, 0), 2.0
        for _ in range(_MAX_DRAWS):
            y, x = int(np.random.randint(0, h - ch + 1)), int(np.random.randint(0, w - cw + 1))
            frac = self._ignored_fraction(y, x)
            if frac <= self.max_ignore_fraction:
                return y, x
            if frac < best_frac:
                best, best_frac = (y, x), frac
        return best

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        if not 0 <= idx < len(self):
            raise IndexError(f"{type(self).__name__}: index {idx} out of range (0..{len(self) - 1})")
        y, x = self.draw_window()
        cw, ch = self.crop_size
        img_path, label_path = self.file_list[0]
        data: Dict[str, Any] = {"img": self.image[y:y + ch, x:x + cw].copy(), "img_path": img_path,
                                "label": self.label[y:y + ch, x:x + cw].copy(), "label_path": label_path,
                                "trans_info": [], "gt_fields": ["label"], "window": (y, x)}
        data = self.transforms(data, label_dtype=None)
        data["label"] = self.finish_train_label(data["label"], img_path)
        if self.edge:
            data["edge"] = mask_to_binary_edge(data["label"], radius=2, ignore_index=self.ignore_index)
        data.pop("gt_fields", None)
        return data

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __repr__(self) -> str:
        h, w = self.label.shape
        return (f"{type(self).__name__}(scene={self.file_list[0][0]!r}, {h}x{w}, crop_size={self.crop_size}, "
                f"samples_per_epoch={self.samples_per_epoch}, num_classes={self.num_classes})")
