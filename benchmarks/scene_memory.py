"""Peak memory of scene inference: a 16000x16000 scene against a 4000x4000 one.

    nice -n 5 python benchmarks/scene_memory.py [--sizes 4000 16000] [--workdir /tmp/scene_memory]

Makes two 3-band uint8 GeoTIFF scenes (tiled, uncompressed, written window by
window), the quick-start PSPNet (ResNet18_vd) with random weights at output
stride 32 (the pixels are what is measured here, not the accuracy, and OS32
keeps a 16000x16000 run within minutes on 2 cores), its Paddle Inference export
(``--output_op none``: logits, so overlapping windows are blended), then runs

- ``deploy/python/infer.py --scene`` and
- ``tools/predict.py --scene``

on each scene with the same window, stride and batch, each under
``/usr/bin/time -v`` (``apt-get install time``), one at a time, and prints peak
RSS and wall time with the large/small ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quick_start" / "pspnet_resnet18_os8_landcover_64x64_400.yml"
OPTS = ["model.backbone.output_stride=32", "model.enable_auxiliary_loss=False"]
WINDOW, STRIDE, BATCH = (512, 512), (512, 512), 2  # no overlap: the least compute per pixel


def make_scene(path: Path, size: int) -> None:
    """A smooth 3-band uint8 scene with noise, georeferenced (UTM 33N, 1 m pixels)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (3, 512, 512), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(1.0, 0, 500000.0, 0, -1.0, 4600000.0),
                       tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER") as ds:
        for y in range(0, size, 512):
            for x in range(0, size, 512):
                h, w = min(512, size - y), min(512, size - x)
                yy, xx = np.mgrid[y:y + h, x:x + w]
                base = ((np.sin(yy / 300.0) + np.cos(xx / 410.0)) * 50 + 100).astype(np.uint8)
                ds.write(base[None] + noise[:, :h, :w], window=Window(x, y, w, h))


def _children(pid: int) -> list:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _hwm_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else 0.0


def timed(cmd, log_path: Path, limit_s: float) -> dict:
    """Run ``cmd`` under /usr/bin/time -v: peak RSS (MiB), wall seconds, whether its bar reached 100 %.

    Past ``limit_s`` the run is stopped; its peak so far (VmHWM, polled every second)
    and how far its progress bar got are reported instead (``done`` < 1).
    """
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["/usr/bin/time", "-v"] + cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        hwm = 0.0
        while proc.poll() is None:
            for c in _children(proc.pid):
                hwm = max(hwm, _hwm_mib(c))
            if time.perf_counter() - t0 > limit_s:
                for c in _children(proc.pid):
                    os.kill(c, 15)
                proc.wait()
                break
            time.sleep(1.0)
    wall = time.perf_counter() - t0
    text = log_path.read_text(errors="replace")
    bars = re.findall(r"\[SCENE\][^|\r\n]*?(\d+)%\|", text)
    done = int(bars[-1]) / 100 if bars else 0.0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if proc.returncode == 0 and m:
        return {"rss_mib": int(m.group(1)) / 1024, "s": wall, "done": done, "time_v": True}
    if wall <= limit_s:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log_path}")
    return {"rss_mib": hwm, "s": wall, "done": done, "time_v": False}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs=2, type=int, default=[4000, 16000])
    p.add_argument("--workdir", default="/tmp/scene_memory")
    p.add_argument("--tools", nargs="+", default=["infer", "predict"], choices=["infer", "predict"])
    p.add_argument("--limit_s", type=float, default=7200, help="stop a run after this long (peak so far reported)")
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    scenes = {}
    for size in args.sizes:
        scenes[size] = work / f"scene_{size}.tif"
        if not scenes[size].exists():
            print(f"making {scenes[size]}", file=sys.stderr, flush=True)
            make_scene(scenes[size], size)
    weights, export = work / "weights.pdparams", work / "export"
    if not (export / "deploy.yaml").exists():
        import paddle

        sys.path.insert(0, str(ROOT))
        from paddleseg_ext.cvlibs import Config, SegBuilder

        paddle.seed(0)
        paddle.save(SegBuilder(Config(str(CONFIG), opts=OPTS)).model.state_dict(), str(weights))
        subprocess.run([py, "tools/export.py", "--config", str(CONFIG), "--model_path", str(weights), "--save_dir",
                        str(export), "--output_op", "none", "--opts", *OPTS], check=True, cwd=ROOT)
    common = ["--scene", "--crop_size", *map(str, WINDOW), "--stride", *map(str, STRIDE),
              "--batch_size", str(BATCH)]
    cmds = {"infer": lambda s, out: [py, "deploy/python/infer.py", "--config", str(export), "--image_path", str(s),
                                     "--save_dir", str(out)] + common,
            "predict": lambda s, out: [py, "tools/predict.py", "--config", str(CONFIG), "--model_path", str(weights),
                                       "--image_path", str(s), "--save_dir", str(out), "--opts", *OPTS] + common}
    rows = []
    for tool in args.tools:
        res = {}
        for size in args.sizes:
            out = work / f"out_{tool}_{size}"
            for f in out.glob("*.tif"):
                f.unlink()
            print(f"running {tool} on {size}x{size}", file=sys.stderr, flush=True)
            res[size] = timed(cmds[tool](scenes[size], out), work / f"{tool}_{size}.log", args.limit_s)
            print(f"  {res[size]}", file=sys.stderr, flush=True)
        small, large = args.sizes
        rows.append((tool, res[small], res[large]))
    print(f"window {WINDOW[0]}x{WINDOW[1]}, stride {STRIDE[0]}x{STRIDE[1]}, batch {BATCH}; "
          f"peak RSS by /usr/bin/time -v; wall seconds on a shared 2-core machine")
    print("(peak from /usr/bin/time -v; '*': run stopped at --limit_s, peak so far from /proc VmHWM)")
    print(f"{'tool':10} {'scene':>12} {'peak RSS MiB':>13} {'wall s':>8} {'bar done':>9}")
    for tool, a, b in rows:
        for size, r in zip(args.sizes, (a, b)):
            mark = "" if r["time_v"] else "*"
            print(f"{tool:10} {f'{size}x{size}':>12} {r['rss_mib']:12.0f}{mark:1} {r['s']:8.0f} "
                  f"{r['done']:8.0%}")
        print(f"{tool:10} {'ratio':>12} {b['rss_mib'] / a['rss_mib']:13.2f}x {b['s'] / a['s']:7.1f}x")


if __name__ == "__main__":
    main()
