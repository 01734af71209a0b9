"""Load on the inference service (deploy/python/serve.py): throughput, latency, errors, memory.

    python benchmarks/serve_load.py [--config EXPORT/deploy.yaml] [--image IMG] [--clients 16]
        [--duration 60] [--max_requests 20000] [--workers 2] [--baseline_s 20]

Loopback only (the service is started here on 127.0.0.1, on a free port, and
stopped at the end); bounded in time (``--duration``) and requests
(``--max_requests``). Without ``--config`` the quick-start model is used
(configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml: its
trained ``output/quickstart/best_model`` when present, else the same network
with random weights, which costs the same to run), exported to ONNX in a
temporary folder. Without ``--image`` a val tile of the demo data is sent
(``data/landcover6``, after ``bash scripts/quickstart.sh``), else a random
image of the model's band count and 64x64.

Measured, each against the same runtime, in interleaved rounds (``--round_s``
of concurrent load each, so load from elsewhere on a shared machine falls on
all three alike):

1. ``sequential, in process``: a loop calling deploy/python's predictor
   (preprocess, run, postprocess) on the image, one at a time, all cores;
2. ``sequential, HTTP``: one client sending one request at a time;
3. ``concurrent, HTTP``: ``--clients`` clients, ``--duration`` seconds in all.

Reported: requests/s, p50 / p99 latency, answers by status (503s are the
designed "queue full" answers; anything else besides 200 is an error), the
service's peak resident memory over the run and in its first and last
tenth (flat = no growth), and the concurrent throughput over each
sequential one. A Markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy" / "python"))

QUICKSTART_CFG = ROOT / "configs" / "landcover6" / "pointrend_resnet18_landcover6band_64x64_1500.yml"
QUICKSTART_MODEL = ROOT / "output" / "quickstart" / "best_model"


def export_quickstart(out_dir: Path) -> Tuple[str, str]:
    """The quick-start model exported to ONNX in ``out_dir``; ``(deploy.yaml, what it is)``."""
    import importlib.util

    import paddle

    spec = importlib.util.spec_from_file_location("tools_export", ROOT / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = ["--config", str(QUICKSTART_CFG), "--save_dir", str(out_dir), "--format", "onnx"]
    if (QUICKSTART_MODEL / "model.pdparams").is_file():
        argv += ["--model_path", str(QUICKSTART_MODEL / "model.pdparams")]
        what = f"{QUICKSTART_CFG.relative_to(ROOT)}, trained weights {QUICKSTART_MODEL.relative_to(ROOT)}"
    else:
        paddle.seed(0)
        what = f"{QUICKSTART_CFG.relative_to(ROOT)}, random weights (no {QUICKSTART_MODEL.relative_to(ROOT)})"
    tool.main(argv)
    return str(out_dir / "deploy.yaml"), what


def pick_image(bands: int, tmp: Path, image: Optional[str]) -> Tuple[str, str]:
    """``(path, what)``: ``image``, a demo val tile, or a random 64x64 image of ``bands`` bands."""
    if image:
        return image, image
    val = ROOT / "data" / "landcover6" / "val.txt"
    if val.is_file():
        first = val.read_text().split()[0]
        path = val.parent / first
        if path.is_file():
            return str(path), str(path.relative_to(ROOT))
    import tifffile

    path = tmp / "random.tif"
    arr = (np.random.RandomState(0).rand(64, 64, bands) * 255).astype(np.uint8)
    tifffile.imwrite(str(path), arr, photometric="minisblack", planarconfig="contig")
    return str(path), f"random 64x64x{bands} uint8 TIFF"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Client:
    """One keep-alive HTTP connection to the service (reconnects after a dropped connection)."""

    def __init__(self, port: int, body: bytes, content_type: str) -> None:
        self.port, self.body, self.headers = port, body, {"Content-Type": content_type}
        self.conn: Optional[http.client.HTTPConnection] = None

    def post(self) -> int:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            self.conn.request("POST", "/predict", body=self.body, headers=self.headers)
            resp = self.conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            return -1


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


def drive(port: int, body: bytes, ctype: str, clients: int, duration: float, max_requests: int
          ) -> Tuple[List[float], collections.Counter, float]:
    """``clients`` threads posting until ``duration`` s or ``max_requests`` answers; latencies (s) of the
    200 answers, answers by status (-1: connection error) and the wall time."""
    lock = threading.Lock()
    lat: List[float] = []
    statuses: collections.Counter = collections.Counter()
    stop = time.perf_counter() + duration

    def loop() -> None:
        client = Client(port, body, ctype)
        while time.perf_counter() < stop:
            with lock:
                if sum(statuses.values()) >= max_requests:
                    return
            t0 = time.perf_counter()
            status = client.post()
            took = time.perf_counter() - t0
            with lock:
                statuses[status] += 1
                if status == 200:
                    lat.append(took)
            if status == 503:
                time.sleep(0.05)  # a polite client backs off (the answer carries Retry-After)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, statuses, time.perf_counter() - start


class InProcess:
    """deploy/python's predictor for the export, called one image at a time (all cores): what
    infer.py does, without HTTP."""

    def __init__(self, config: str, runtime: str, image: str) -> None:
        import serve

        from infer import DeployConfig

        cfg = DeployConfig(config)
        self.predictor = serve.make_predictor(cfg.path, serve.pick_runtime(cfg, runtime), os.cpu_count() or 1)
        self.image = image
        self.predictor.predict([image])  # warm-up

    def loop(self, seconds: float) -> Tuple[int, float]:
        """``(images, wall s)`` of ``seconds`` of back-to-back predictions."""
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.predictor.predict([self.image])
            n += 1
        return n, time.perf_counter() - start


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="deploy.yaml of an export (default: the quick-start model, exported here)")
    p.add_argument("--image", help="image to send (default: a demo val tile, or a random one)")
    p.add_argument("--runtime", default="auto", help="serve.py --runtime")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of concurrent load")
    p.add_argument("--max_requests", type=int, default=20000, help="stop the concurrent run after this many")
    p.add_argument("--baseline_s", type=float, default=24.0, help="seconds of each sequential baseline (in all)")
    p.add_argument("--round_s", type=float, default=10.0,
                   help="seconds of concurrent load per round (rounds interleave the three runs)")
    p.add_argument("--workers", type=int, default=2, help="serve.py --workers")
    p.add_argument("--max_queue", type=int, default=16, help="serve.py --max_queue")
    args = p.parse_args(argv)
    for name in ("clients", "max_requests", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp_name:
        tmp = Path(tmp_name)
        if args.config:
            config, model_what = args.config, args.config
        else:
            # The toolkit's log lines go to stderr: stdout is the Markdown table.
            with contextlib.redirect_stdout(sys.stderr):
                config, model_what = export_quickstart(tmp / "export")
        from infer import DeployConfig

        bands = DeployConfig(config).transforms.img_channels
        image, image_what = pick_image(bands, tmp, args.image)
        body = Path(image).read_bytes()
        ctype = "application/octet-stream"

        print("[serve_load] loading the in-process predictor", file=sys.stderr)
        direct = InProcess(config, args.runtime, image)

        port = free_port()
        log_path = tmp / "serve.log"
        cmd = [sys.executable, str(ROOT / "deploy" / "python" / "serve.py"), "--config", config, "--host",
               "127.0.0.1", "--port", str(port), "--runtime", args.runtime, "--workers", str(args.workers),
               "--max_queue", str(args.max_queue)]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        rss: List[Tuple[float, float]] = []
        sampling = threading.Event()
        try:
            deadline = time.time() + 180
            while not healthy(port):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"serve.py did not start:\n{log_path.read_text()}")
                time.sleep(0.3)

            def sample() -> None:
                t0 = time.perf_counter()
                while not sampling.is_set():
                    rss.append((time.perf_counter() - t0, rss_mb(proc.pid)))
                    time.sleep(0.25)

            drive(port, body, ctype, 1, 1.0, 10)  # warm the service's predictors
            rss_before = rss_mb(proc.pid)
            sampler = threading.Thread(target=sample)
            sampler.start()
            # Interleaved rounds (in-process, sequential HTTP, concurrent HTTP), so the load from
            # elsewhere on a shared machine falls on all three alike.
            rounds = max(1, math.ceil(args.duration / args.round_s))
            direct_n = direct_s = wall1 = wall = 0.0
            lat1: List[float] = []
            lat: List[float] = []
            st1: collections.Counter = collections.Counter()
            statuses: collections.Counter = collections.Counter()
            for r in range(rounds):
                conc_s = min(args.round_s, args.duration - r * args.round_s)
                base_s = args.baseline_s / rounds
                print(f"[serve_load] round {r + 1}/{rounds}: {base_s:g} s in process, {base_s:g} s sequential "
                      f"HTTP, {conc_s:g} s with {args.clients} clients", file=sys.stderr)
                n, t = direct.loop(base_s)
                direct_n, direct_s = direct_n + n, direct_s + t
                la, st, t = drive(port, body, ctype, 1, base_s, args.max_requests)
                lat1, st1, wall1 = lat1 + la, st1 + st, wall1 + t
                left = args.max_requests - sum(statuses.values())
                if left > 0:
                    la, st, t = drive(port, body, ctype, args.clients, conc_s, left)
                    lat, statuses, wall = lat + la, statuses + st, wall + t
            seq_direct, seq_http = direct_n / direct_s, st1[200] / wall1
            sampling.set()
            sampler.join()
        finally:
            sampling.set()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        runtime_line = next((line for line in log_path.read_text().splitlines() if " on " in line and
                             "worker(s)" in line), "")

    conc = statuses[200] / wall
    errors = sum(n for s, n in statuses.items() if s not in (200, 503))
    tenth = max(1, len(rss) // 10)
    rss = rss or [(0.0, float("nan"))]
    first, last = [m for _, m in rss[:tenth]], [m for _, m in rss[-tenth:]]
    print("| run | clients | requests/s | p50 ms | p99 ms | 200 | 503 | errors | vs sequential in-process "
          "| vs sequential HTTP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| sequential, in process | 1 | {seq_direct:.1f} | {1e3 / seq_direct:.1f} | - | - | - | - | 1.00x | - |")
    print(f"| sequential, HTTP | 1 | {seq_http:.1f} | {1e3 * pct(lat1, 50):.1f} | {1e3 * pct(lat1, 99):.1f} | "
          f"{st1[200]} | {st1[503]} | {sum(n for s, n in st1.items() if s not in (200, 503))} | "
          f"{seq_http / seq_direct:.2f}x | 1.00x |")
    print(f"| concurrent, HTTP | {args.clients} | {conc:.1f} | {1e3 * pct(lat, 50):.1f} | {1e3 * pct(lat, 99):.1f} | "
          f"{statuses[200]} | {statuses[503]} | {errors} | {conc / seq_direct:.2f}x | {conc / seq_http:.2f}x |")
    print()
    print(f"- model: {model_what}; image: {image_what} ({len(body):,} bytes), raw body")
    print(f"- service: {runtime_line.split('[SERVE] ')[-1]}; max_queue {args.max_queue}")
    print(f"- {rounds} interleaved round(s), each: {args.baseline_s / rounds:g} s in process, "
          f"{args.baseline_s / rounds:g} s sequential HTTP, up to {args.round_s:g} s concurrent")
    print(f"- concurrent run: {wall:.1f} s wall, {sum(statuses.values())} answers "
          f"({', '.join(f'{s}: {n}' for s, n in sorted(statuses.items()))}); bounded by --duration "
          f"{args.duration:g} s and --max_requests {args.max_requests}")
    print(f"- service RSS: {rss_before:.0f} MB before the concurrent run; peak {max(m for _, m in rss):.0f} MB; "
          f"first tenth of the run peak {max(first):.0f} MB, last tenth peak {max(last):.0f} MB "
          f"({len(rss)} samples, every 0.25 s)")
    print(f"- sequential in process: deploy/python predictor preprocess + run + postprocess, "
          f"{os.cpu_count()} threads, {direct_s:.1f} s; sequential HTTP: 1 client, {wall1:.1f} s, same service")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
