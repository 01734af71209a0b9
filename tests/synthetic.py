"""Tiny synthetic segmentation datasets in the real folder layouts.

For tests anywhere in the repo: each ``make_*`` writes a few small images and
label maps under ``root`` (created if needed) and returns ``root`` as a str.

* Labels are maps of simple shapes (rectangles and circles) on a background
  class; every map holds at least two classes.
* Images are derived from the labels: each class has a fixed RGB colour
  (:func:`class_color`) plus a little noise, so a model can learn the task and
  tests can check image/label alignment after transforms.
* ``size`` is ``(width, height)`` like PaddleSeg's ``target_size``.
* Output is deterministic for a given ``seed``.

Example::

    from tests.synthetic import make_cityscapes
    root = make_cityscapes(tmp_path / "cityscapes")
    ds = Cityscapes(dataset_root=root, transforms=[Normalize()], mode="train")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, Path]

__all__ = ["make_cityscapes", "make_voc", "make_ade20k", "make_camvid",
           "make_filelist_dataset", "make_landcover", "random_label", "image_from_label",
           "class_color", "write_image", "write_label"]


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #
def class_color(c: int) -> Tuple[int, int, int]:
    """Fixed, well separated RGB colour of class ``c`` (255 = ignore: grey)."""
    if c == 255:
        return (128, 128, 128)
    # Golden-ratio hue walk gives distinct hues for neighbouring ids.
    hue = (c * 0.618033988749895) % 1.0
    hsv = np.array([[[hue * 180, 200, 60 + (c * 37) % 180]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def random_label(rng: np.random.Generator, size: Tuple[int, int], num_classes: int,
                 classes: Optional[List[int]] = None, n_shapes: int = 3) -> np.ndarray:
    """``HxW`` uint8 map: a background class plus rectangles/circles of others.

    Args:
        rng: numpy Generator.
        size: ``(width, height)``.
        num_classes: ids are drawn from ``range(num_classes)`` ...
        classes: ... or from this list.
        n_shapes: number of shapes drawn over the background.
    """
    w, h = size
    pool = list(classes) if classes is not None else list(range(num_classes))
    bg = int(rng.choice(pool))
    label = np.full((h, w), bg, np.uint8)
    others = [c for c in pool if c != bg] or pool
    for i in range(n_shapes):
        c = int(others[i % len(others)]) if i == 0 else int(rng.choice(others))
        if rng.random() < 0.5:
            x0, y0 = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h // 2)))
            x1 = int(rng.integers(x0 + max(2, w // 6), w + 1))
            y1 = int(rng.integers(y0 + max(2, h // 6), h + 1))
            label[y0:y1, x0:x1] = c
        else:
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(max(2, min(w, h) // 8), max(3, min(w, h) // 3)))
            cv2.circle(label, (cx, cy), r, c, thickness=-1)
    return label


def image_from_label(rng: np.random.Generator, label: np.ndarray, noise: int = 10) -> np.ndarray:
    """``HxWx3`` uint8 RGB image: class colours of ``label`` plus uniform noise."""
    lut = np.array([class_color(c) for c in range(256)], np.int16)
    img = lut[label] + rng.integers(-noise, noise + 1, size=label.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(path: PathLike, arr: np.ndarray) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ext = os.path.splitext(path)[1]
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ValueError(f"cannot encode {path}")
    buf.tofile(path)  # works for non-ASCII paths, unlike cv2.imwrite on some systems
    return path


def write_image(path: PathLike, rgb: np.ndarray) -> str:
    """Write an RGB (or gray) uint8 image; the extension picks the format."""
    return _write(path, rgb[:, :, ::-1] if rgb.ndim == 3 else rgb)


def write_label(path: PathLike, label: np.ndarray, palette: bool = False) -> str:
    """Write a label PNG: grayscale index image, or a palette PNG (VOC style)."""
    if not palette:
        return _write(path, label.astype(np.uint8))
    from PIL import Image
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    pal = []
    for c in range(256):
        pal += list(class_color(c))
    im.putpalette(pal)
    im.save(str(path))
    return str(path)


def _sample(rng: np.random.Generator, size: Tuple[int, int], num_classes: int,
            void_border: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    label = random_label(rng, size, num_classes)
    img = image_from_label(rng, label)
    if void_border:
        # VOC-style 255 outline around object boundaries.
        edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        label = label.copy()
        label[edges] = 255
    return img, label


# --------------------------------------------------------------------------- #
# Dataset layouts
# --------------------------------------------------------------------------- #
def make_cityscapes(root: PathLike, n_train: int = 2, n_val: int = 2,
                    size: Tuple[int, int] = (64, 32), seed: int = 0) -> str:
    """Cityscapes layout: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (ids 0..18, 255 void
    border), two cities per split."""
    rng = np.random.default_rng(seed)
    root = str(root)
    for split, n, cities in (("train", n_train, ("aachen", "bochum")),
                             ("val", n_val, ("frankfurt", "lindau"))):
        for i in range(n):
            city = cities[i % 2]
            stem = f"{city}_{i:06d}_000019"
            img, label = _sample(rng, size, 19)
            label[0, :] = 255  # some void, like the ego-vehicle/border pixels
            write_image(os.path.join(root, "leftImg8bit", split, city,
                                     stem + "_leftImg8bit.png"), img)
            write_label(os.path.join(root, "gtFine", split, city,
                                     stem + "_gtFine_labelTrainIds.png"), label)
    return root


def make_voc(root: PathLike, n_train: int = 2, n_val: int = 2, size: Tuple[int, int] = (48, 40),
             n_aug_extra: int = 1, seed: int = 0) -> str:
    """Pascal VOC layout under ``root/VOC2012``: JPEGImages (*.jpg),
    SegmentationClass (palette PNGs with a 255 outline), SegmentationClassAug
    (grayscale PNGs, train + ``n_aug_extra`` SBD-only ids), and
    ImageSets/Segmentation/{train,val,trainval,aug}.txt. ``root`` is the
    VOCdevkit folder to pass as ``dataset_root``."""
    rng = np.random.default_rng(seed)
    root = str(root)
    voc = os.path.join(root, "VOC2012")
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    os.makedirs(sets, exist_ok=True)
    ids = {"train": [f"2007_{i:06d}" for i in range(n_train)],
           "val": [f"2008_{i:06d}" for i in range(n_val)],
           "extra": [f"2011_{i:06d}" for i in range(n_aug_extra)]}
    for split, names in ids.items():
        for name in names:
            img, label = _sample(rng, size, 21)
            write_image(os.path.join(voc, "JPEGImages", name + ".jpg"), img)
            if split != "extra":
                edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT,
                                         np.ones((3, 3), np.uint8)) > 0
                write_label(os.path.join(voc, "SegmentationClass", name + ".png"),
                            np.where(edges, 255, label), palette=True)
            if split != "val":
                write_label(os.path.join(voc, "SegmentationClassAug", name + ".png"), label)
    lists = {"train.txt": ids["train"], "val.txt": ids["val"],
             "trainval.txt": ids["train"] + ids["val"],
             "aug.txt": ids["train"] + ids["extra"]}
    for fname, names in lists.items():
        with open(os.path.join(sets, fname), "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
    return root


def make_ade20k(root: PathLike, n_train: int = 2, n_val: int = 2,
                size: Tuple[int, int] = (48, 40), seed: int = 0) -> str:
    """ADE20K layout: ``images/{training,validation}/ADE_*.jpg`` and
    ``annotations/{training,validation}/ADE_*.png`` with RAW ids 0..150
    (0 = other, reduced to 255 by the dataset; each map contains 0 and 150)."""
    rng = np.random.default_rng(seed)
    root = str(root)
    for split, n, tag in (("training", n_train, "train"), ("validation", n_val, "val")):
        for i in range(n):
            stem = f"ADE_{tag}_{i + 1:08d}"
            label = random_label(rng, size, 0, classes=[0, 1, 5, 37, 150])
            label[-1, :] = 150  # highest raw id -> class 149
            label[0, 0] = 0
            img = image_from_label(rng, label)
            write_image(os.path.join(root, "images", split, stem + ".jpg"), img)
            write_label(os.path.join(root, "annotations", split, stem + ".png"), label)
    return root


def make_camvid(root: PathLike, n_train: int = 2, n_val: int = 2, n_test: int = 1,
                size: Tuple[int, int] = (48, 36), seed: int = 0) -> str:
    """CamVid layout: ``{train,val,test}/*.png`` images, ``{split}annot/*.png``
    labels (ids 0..10, 255 void) and ``train.txt``/``val.txt``/``test.txt``
    lists of relative ``image label`` lines."""
    rng = np.random.default_rng(seed)
    root = str(root)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        lines = []
        for i in range(n):
            name = f"0001TP_{split}_{i:04d}.png"
            img, label = _sample(rng, size, 11)
            label[-1, :3] = 255
            write_image(os.path.join(root, split, name), img)
            write_label(os.path.join(root, split + "annot", name), label)
            lines.append(f"{split}/{name} {split}annot/{name}\n")
        with open(os.path.join(root, split + ".txt"), "w", encoding="utf-8") as f:
            f.write("".join(lines))
    return root


def make_filelist_dataset(root: PathLike, num_classes: int, n_train: int = 2, n_val: int = 2,
                          size: Tuple[int, int] = (32, 32), seed: int = 0,
                          img_ext: str = ".png") -> str:
    """Generic :class:`Dataset` layout: ``images/*``, ``labels/*.png`` (ids
    ``0..num_classes-1``), ``train.txt`` and ``val.txt`` (relative
    ``image label`` lines) and ``test.txt`` (image-only lines of the val
    images). Pass ``train_path='train.txt'`` etc. to the dataset."""
    rng = np.random.default_rng(seed)
    root = str(root)
    os.makedirs(root, exist_ok=True)
    test_lines = []
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            stem = f"{split}_{i:04d}"
            img, label = _sample(rng, size, num_classes)
            write_image(os.path.join(root, "images", stem + img_ext), img)
            write_label(os.path.join(root, "labels", stem + ".png"), label)
            lines.append(f"images/{stem}{img_ext} labels/{stem}.png\n")
            if split == "val":
                test_lines.append(f"images/{stem}{img_ext}\n")
        with open(os.path.join(root, split + ".txt"), "w", encoding="utf-8") as f:
            f.write("".join(lines))
    with open(os.path.join(root, "test.txt"), "w", encoding="utf-8") as f:
        f.write("".join(test_lines))
    return root


def make_landcover(root: PathLike, n_train: int = 4, n_val: int = 2,
                   size: Tuple[int, int] = (64, 64), seed: int = 0) -> str:
    """The ``prepare_landcover.py`` output layout (7 classes, ``labels.txt``)
    with synthetic tiles, for tests of the LandCover dataset/config."""
    root = make_filelist_dataset(root, 7, n_train, n_val, size, seed)
    names = ["developed", "agriculture", "herbaceous", "shrubland", "forest", "water",
             "sediment"]
    with open(os.path.join(root, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in names))
    return root
