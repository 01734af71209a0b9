"""Load on the inference service (deploy/python/serve.py): throughput, latency, errors, memory.

    python benchmarks/serve_load.py [--config EXPORT/deploy.yaml] [--image IMG] [--clients 16]
        [--duration 60] [--max_requests 20000] [--workers 2] [--max_batch 8] [--also_max_batch 1]
        [--baseline_s 24]

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
   (preprocess, run, postprocess) on the image, one at a time, all cores, on
   the runtime the service chose (its ``/metadata``);
2. ``sequential, HTTP``: one client sending one request at a time;
3. ``concurrent, HTTP``: ``--clients`` clients, ``--duration`` seconds in all;
4. with ``--also_max_batch N``: the same concurrent load on a second service
   started with ``--max_batch N`` (``1``: batching off), same rounds.

Reported: requests/s, p50 / p99 latency, answers by status (503s are the
designed "queue full" answers; anything else besides 200 is an error), the
service's peak resident memory over the run and in its first and last
tenth (flat = no growth), the concurrent throughput over each sequential
one, and where a request's time went (mean ms from the service's
``X-Timing``: queue wait, decode + preprocess, the predictor call, postprocess
+ encode; the rest of the client's latency is HTTP at both ends and, in a
batch, the other requests' decode and encode on the same worker). A Markdown
table goes to stdout.
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
from typing import Dict, List, Optional, Sequence, Tuple

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

    def post(self) -> Tuple[int, Dict[str, float]]:
        """``(status, the service's X-Timing in ms and X-Batch-Size)``; status -1: connection error."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            self.conn.request("POST", "/predict", body=self.body, headers=self.headers)
            resp = self.conn.getresponse()
            resp.read()
            timing = {k: float(v) for k, v in (kv.split("=") for kv in
                                                (resp.getheader("X-Timing") or "").split(",") if kv)}
            if resp.getheader("X-Batch-Size"):
                timing["batch"] = float(resp.getheader("X-Batch-Size"))
            return resp.status, timing
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            return -1, {}


def get_json(port: int, path: str) -> Optional[dict]:
    """The JSON answer to ``GET path``, or None when the service does not answer (yet)."""
    import json

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        return json.loads(resp.read()) if resp.status == 200 else None
    except OSError:
        return None


class Service:
    """serve.py in a child process on a free loopback port, its log in ``log_path``."""

    def __init__(self, config: str, runtime: str, workers: int, max_queue: int, max_batch: int,
                 log_path: Path) -> None:
        self.port, self.log_path, self.max_batch = free_port(), log_path, max_batch
        cmd = [sys.executable, str(ROOT / "deploy" / "python" / "serve.py"), "--config", config, "--host",
               "127.0.0.1", "--port", str(self.port), "--runtime", runtime, "--workers", str(workers),
               "--max_queue", str(max_queue), "--max_batch", str(max_batch)]
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> dict:
        """Its ``/metadata`` once it answers."""
        deadline = time.time() + 300
        while True:
            meta = get_json(self.port, "/metadata")
            if meta is not None:
                return meta
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"serve.py did not start:\n{self.log_path.read_text()}")
            time.sleep(0.3)

    def line(self) -> str:
        """The start-up line naming runtime, workers, queue and batch."""
        return next((line.split("[SERVE] ")[-1] for line in self.log_path.read_text().splitlines()
                     if " on " in line and "worker(s)" in line), "")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Run:
    """What one kind of run collected over its rounds."""

    def __init__(self) -> None:
        self.lat: List[float] = []  # s, of the 200 answers
        self.statuses: collections.Counter = collections.Counter()
        self.wall = 0.0
        self.timing: Dict[str, List[float]] = collections.defaultdict(list)

    def add(self, other: "Run") -> None:
        self.lat += other.lat
        self.statuses += other.statuses
        self.wall += other.wall
        for k, v in other.timing.items():
            self.timing[k] += v

    @property
    def rps(self) -> float:
        return self.statuses[200] / self.wall if self.wall else float("nan")

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in (200, 503))

    def where(self) -> str:
        """Mean ms per stage of the 200 answers, and what is left of the latency: HTTP at both ends,
        and in a batch the other requests' decode and encode on the same worker."""
        if not self.lat or not self.timing:
            return "-"
        mean = {k: float(np.mean(v)) for k, v in self.timing.items()}
        stages = [k for k in ("queue", "prepare", "run", "finish") if k in mean]
        rest = 1e3 * float(np.mean(self.lat)) - sum(mean[k] for k in stages)
        return ", ".join([f"{k} {mean[k]:.1f}" for k in stages] + [f"rest {rest:.1f}"]) + \
            (f"; batch {mean['batch']:.2f}" if "batch" in mean else "")


def drive(port: int, body: bytes, ctype: str, clients: int, duration: float, max_requests: int) -> Run:
    """``clients`` threads posting until ``duration`` s or ``max_requests`` answers: latencies (s) and
    stage timings of the 200 answers, answers by status (-1: connection error) and the wall time."""
    lock = threading.Lock()
    run = Run()
    lat, statuses = run.lat, run.statuses
    stop = time.perf_counter() + duration

    def loop() -> None:
        client = Client(port, body, ctype)
        while time.perf_counter() < stop:
            with lock:
                if sum(statuses.values()) >= max_requests:
                    return
            t0 = time.perf_counter()
            status, timing = client.post()
            took = time.perf_counter() - t0
            with lock:
                statuses[status] += 1
                if status == 200:
                    lat.append(took)
                    for k, v in timing.items():
                        run.timing[k].append(v)
            if status == 503:
                time.sleep(0.05)  # a polite client backs off (the answer carries Retry-After)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall = time.perf_counter() - start
    return run


class InProcess:
    """deploy/python's predictor for the export, called one image at a time (all cores): what
    infer.py does, without HTTP."""

    def __init__(self, config: str, runtime: str, image: str) -> None:
        import serve

        self.predictor = serve.make_predictor(config, runtime, os.cpu_count() or 1)
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
    p.add_argument("--max_batch", type=int, default=8, help="serve.py --max_batch")
    p.add_argument("--also_max_batch", type=int, default=0,
                   help="also load a second service with this --max_batch (1: batching off) in the same rounds")
    args = p.parse_args(argv)
    for name in ("clients", "max_requests", "workers", "max_batch"):
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

        services = [Service(config, args.runtime, args.workers, args.max_queue, args.max_batch, tmp / "serve.log")]
        if args.also_max_batch:
            services.append(Service(config, args.runtime, args.workers, args.max_queue, args.also_max_batch,
                                    tmp / "serve_b.log"))
        rss: List[Tuple[float, float]] = []
        sampling = threading.Event()
        try:
            metas = [s.wait() for s in services]
            runtime = metas[0]["runtime"]
            if any(m["runtime"] != runtime for m in metas):  # auto timed the runtimes differently
                raise RuntimeError(f"the services chose different runtimes ({[m['runtime'] for m in metas]}); "
                                   "pass --runtime to compare batching on one")
            print(f"[serve_load] service runtime {runtime} ({metas[0]['runtime_choice']['reason']}); loading the "
                  "in-process predictor", file=sys.stderr)
            direct = InProcess(config, runtime, image)
            main_proc = services[0].proc

            def sample() -> None:
                t0 = time.perf_counter()
                while not sampling.is_set():
                    rss.append((time.perf_counter() - t0, rss_mb(main_proc.pid)))
                    time.sleep(0.25)

            for s in services:
                drive(s.port, body, ctype, 1, 1.0, 10)  # warm the service's predictors
            rss_before = rss_mb(main_proc.pid)
            sampler = threading.Thread(target=sample)
            sampler.start()
            # Interleaved rounds (in-process, sequential HTTP, concurrent HTTP on each service), so the
            # load from elsewhere on a shared machine falls on all alike.
            rounds = max(1, math.ceil(args.duration / args.round_s))
            direct_n = direct_s = 0.0
            seq, conc = Run(), [Run() for _ in services]
            for r in range(rounds):
                conc_s = min(args.round_s, args.duration - r * args.round_s)
                base_s = args.baseline_s / rounds
                print(f"[serve_load] round {r + 1}/{rounds}: {base_s:g} s in process, {base_s:g} s sequential "
                      f"HTTP, {conc_s:g} s with {args.clients} clients on each of {len(services)} service(s)",
                      file=sys.stderr)
                n, t = direct.loop(base_s)
                direct_n, direct_s = direct_n + n, direct_s + t
                seq.add(drive(services[0].port, body, ctype, 1, base_s, args.max_requests))
                for s, c in zip(services, conc):
                    left = args.max_requests - sum(c.statuses.values())
                    if left > 0:
                        c.add(drive(s.port, body, ctype, args.clients, conc_s, left))
            seq_direct = direct_n / direct_s
            sampling.set()
            sampler.join()
            lines = [s.line() for s in services]
            health = get_json(services[0].port, "/health") or {}
        finally:
            sampling.set()
            for s in services:
                s.stop()

    tenth = max(1, len(rss) // 10)
    rss = rss or [(0.0, float("nan"))]
    first, last = [m for _, m in rss[:tenth]], [m for _, m in rss[-tenth:]]
    print("| run | clients | requests/s | p50 ms | p99 ms | 200 | 503 | errors | vs sequential in-process "
          "| vs sequential HTTP | where a request's time went (mean ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| sequential, in process | 1 | {seq_direct:.1f} | {1e3 / seq_direct:.1f} | - | - | - | - | 1.00x | - | - |")

    def row(name: str, clients: int, run: Run) -> None:
        print(f"| {name} | {clients} | {run.rps:.1f} | {1e3 * pct(run.lat, 50):.1f} | {1e3 * pct(run.lat, 99):.1f} | "
              f"{run.statuses[200]} | {run.statuses[503]} | {run.errors} | {run.rps / seq_direct:.2f}x | "
              f"{run.rps / seq.rps:.2f}x | {run.where()} |")

    row("sequential, HTTP", 1, seq)
    for s, c in zip(services, conc):
        row(f"concurrent, HTTP, max_batch {s.max_batch}", args.clients, c)
    print()
    print(f"- model: {model_what}; image: {image_what} ({len(body):,} bytes), raw body")
    for line in lines:
        print(f"- service: {line}")
    print(f"- {rounds} interleaved round(s), each: {args.baseline_s / rounds:g} s in process, "
          f"{args.baseline_s / rounds:g} s sequential HTTP, up to {args.round_s:g} s concurrent per service")
    for s, c in zip(services, conc):
        print(f"- concurrent run, max_batch {s.max_batch}: {c.wall:.1f} s wall, {sum(c.statuses.values())} answers "
              f"({', '.join(f'{k}: {n}' for k, n in sorted(c.statuses.items()))}); bounded by --duration "
              f"{args.duration:g} s and --max_requests {args.max_requests}")
    print(f"- predictor calls by batch size (first service): {health.get('batches', {})}")
    print(f"- service RSS (first service): {rss_before:.0f} MB before the concurrent run; peak "
          f"{max(m for _, m in rss):.0f} MB; first tenth of the run peak {max(first):.0f} MB, last tenth peak "
          f"{max(last):.0f} MB ({len(rss)} samples, every 0.25 s)")
    print(f"- sequential in process: deploy/python predictor ({runtime}) preprocess + run + postprocess, "
          f"{os.cpu_count()} threads, {direct_s:.1f} s; sequential HTTP: 1 client, {seq.wall:.1f} s, first service")
    print(f"- load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 1 if any(c.errors for c in conc) or seq.errors else 0


if __name__ == "__main__":
    sys.exit(main())
