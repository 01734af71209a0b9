"""Windowed reading of a large TIFF: rasterio (GDAL) against tifffile + zarr.

    python benchmarks/scene_io.py [--size 8000] [--window 512] [--workdir /tmp/scene_io]

Writes one ``size x size`` 3-band uint8 scene twice (striped, as most tools
write plain TIFFs, and 256x256-tiled, as GeoTIFF producers do), then reads
every ``window x window`` window of it in a fresh process per (library,
layout), interleaved, and prints seconds and peak RSS for each, with the
ratio tifffile/rasterio measured in the same run. tifffile+zarr needs
``pip install zarr`` (not a requirement of the toolkit: this is the
measurement that decided against it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np
lib, path, win = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
total = 0
if lib == "rasterio":
    import rasterio
    from rasterio.windows import Window
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(path) as src:
        h, w = src.height, src.width
        for y in range(0, h, win):
            for x in range(0, w, win):
                a = src.read(window=Window(x, y, min(win, w - x), min(win, h - y)))
                total += int(a[0, 0, 0])
else:
    import tifffile, zarr
    with tifffile.TiffFile(path) as tif:
        store = tif.aszarr()
        z = zarr.open(store, mode="r")
        h, w = z.shape[:2]
        for y in range(0, h, win):
            for x in range(0, w, win):
                a = z[y:y + win, x:x + win]
                total += int(a[0, 0, 0])
print(json.dumps({"s": time.perf_counter() - t0,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_scene(path: str, size: int, tiled: bool) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    band = rng.integers(0, 255, (size, 256), dtype=np.uint8)

    def rows():  # the scene strip by strip, never whole in memory
        for y in range(0, size, 256):
            n = min(256, size - y)
            yield np.ascontiguousarray(np.tile(band[:n, None, :], (1, 3, size // 256 + 1))
                                       .reshape(n, 3, -1)[:, :, :size].transpose(0, 2, 1))

    if tiled:
        def tiles():
            for strip in rows():
                for x in range(0, size, 256):
                    t = np.zeros((256, 256, 3), np.uint8)
                    part = strip[:, x:x + 256]
                    t[:part.shape[0], :part.shape[1]] = part
                    yield t
        tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(256, 256),
                         photometric="rgb")
    else:
        tifffile.imwrite(path, rows(), shape=(size, size, 3), dtype=np.uint8, rowsperstrip=256,
                         photometric="rgb")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=8000)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/scene_io_bench")
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    results = {}
    for layout in ("striped", "tiled"):
        path = os.path.join(args.workdir, f"scene_{layout}_{args.size}.tif")
        if not os.path.exists(path):
            make_scene(path, args.size, layout == "tiled")
        for rep in range(args.repeats):
            for lib in ("rasterio", "tifffile+zarr"):  # interleaved: the machine is shared
                out = subprocess.run([sys.executable, "-c", CHILD, lib.split("+")[0], path, str(args.window)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((layout, lib), []).append(r)
    print(f"{args.size}x{args.size} 3-band uint8, {args.window}x{args.window} windows, "
          f"median of {args.repeats} (fresh process each):")
    print(f"{'layout':8} {'library':15} {'seconds':>8} {'peak RSS MiB':>13}  tifffile/rasterio")
    for layout in ("striped", "tiled"):
        med = {}
        for lib in ("rasterio", "tifffile+zarr"):
            rs = results[(layout, lib)]
            med[lib] = (float(np.median([r["s"] for r in rs])), float(np.median([r["rss_mib"] for r in rs])))
        for lib in ("rasterio", "tifffile+zarr"):
            s, m = med[lib]
            ratio = "" if lib == "rasterio" else \
                f"  time {s / med['rasterio'][0]:.2f}x, RSS {m / med['rasterio'][1]:.2f}x"
            print(f"{layout:8} {lib:15} {s:8.2f} {m:13.0f}{ratio}")


if __name__ == "__main__":
    main()
