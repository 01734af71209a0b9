"""Why the service's resident memory rose during the 60 s load run, and what keeps it flat.

    python benchmarks/serve_memory.py [--config EXPORT/deploy.yaml] [--runtime onnx] [--seconds 20] [--rounds 2]

The service's workers (2 threads, one predictor each, 1 thread per predictor)
run the micro-batches the load run gave them: batch sizes drawn, in a seeded
random order, from the counts serve_load.py reported at 16:02 on 2026-12-07
(1: 293, 2: 26, 3: 31, 4: 220, 5: 82, 6: 11, 7: 4, 8: 1 calls), so a rare size
(8) first comes late. Each variant runs in its own process (resident memory is
per process), in interleaved rounds, ``--seconds`` each, and reports its RSS
after start-up, the peak in the first and in the last tenth of the run, and the
images per second it managed (to see what a fix costs):

* ``1-image warm-up``: the predictors as serve.py built and warmed them before
  this measurement (one 64x64 image each);
* ``+ largest batch``: the same, plus one call at the largest batch (8) per
  predictor before the run (serve.py's warm-up now);
* ``+ largest batch, 2 malloc arenas``: the same with glibc limited to two
  malloc arenas (``serve_pool.limit_malloc_arenas``; glibc makes one per thread
  that finds the others busy, up to 8 per core): serve.py now;
* ``no arena`` (onnxruntime only): the 1-image warm-up, the session without its
  CPU memory arena (``SessionOptions.enable_cpu_mem_arena = False``), every
  call allocating from malloc.

Without ``--config`` the quick-start network is exported (serve_load.py's
``export_quickstart``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "deploy" / "python"))

#: Predictor calls by batch size in serve_load.py's 60 s run at 16:02 on 2026-12-07 (max_batch 8).
BATCH_COUNTS = {1: 293, 2: 26, 3: 31, 4: 220, 5: 82, 6: 11, 7: 4, 8: 1}
#: variant -> (limit glibc to two malloc arenas, warm up at the largest batch too)
VARIANTS = {"1-image warm-up": (False, False), "+ largest batch": (False, True),
            "+ largest batch, 2 malloc arenas": (True, True), "no arena": (False, False)}


def child(config: str, runtime: str, variant: str, seconds: float, seed: int) -> Dict[str, Any]:
    """One variant in this process: two worker threads for ``seconds``; RSS every 0.1 s."""
    import os

    from infer import DeployConfig
    from serve import make_predictor_for
    from serve_load import rss_mb

    if VARIANTS[variant][0]:
        from serve_pool import limit_malloc_arenas

        if not limit_malloc_arenas(2):
            raise RuntimeError("could not limit glibc's malloc arenas here")
    cfg = DeployConfig(config, "onnx")
    preds = [make_predictor_for(cfg, runtime, 1) for _ in range(2)]
    if variant == "no arena":
        import onnxruntime as ort

        for p in preds:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
            opts.enable_cpu_mem_arena = False
            p.session = ort.InferenceSession(cfg.onnx_file, opts, providers=["CPUExecutionProvider"])
    c = cfg.transforms.img_channels
    for p in preds:  # serve.py's warm-up: one 64x64 image
        p.run(np.zeros((1, c, 64, 64), np.float32))
        if VARIANTS[variant][1]:
            p.run(np.zeros((max(BATCH_COUNTS), c, 64, 64), np.float32))
    sizes = [b for b, n in BATCH_COUNTS.items() for _ in range(n)]
    start_rss = rss_mb(os.getpid())
    done = [0, 0]
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        rng = np.random.RandomState(seed + i)
        order = rng.permutation(sizes)
        k = 0
        while time.perf_counter() < stop:
            b = int(order[k % len(order)])
            k += 1
            preds[i].run(rng.standard_normal((b, c, 64, 64)).astype(np.float32))
            done[i] += b

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    samples: List[float] = []
    while any(t.is_alive() for t in threads):
        samples.append(rss_mb(os.getpid()))
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    tenth = max(1, len(samples) // 10)
    return {"variant": variant, "start": start_rss, "first": max(samples[:tenth]), "last": max(samples[-tenth:]),
            "peak": max(samples), "images_per_s": sum(done) / elapsed, "samples": len(samples),
            "series": [round(m) for m in samples[::max(1, len(samples) // 12)]]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="an ONNX export's deploy.yaml (default: the quick-start network)")
    p.add_argument("--runtime", default="onnx", choices=("onnx", "openvino"))
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.config, args.runtime, args.child, args.seconds, args.seed)))
        return 0
    variants = [v for v in VARIANTS if args.runtime == "onnx" or v != "no arena"]

    with tempfile.TemporaryDirectory(prefix="serve_memory_") as tmp:
        config = args.config
        if not config:
            from serve_load import export_quickstart

            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                config, _ = export_quickstart(Path(tmp) / "export")
        results: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for v in variants:
                out = subprocess.run([sys.executable, __file__, "--config", config, "--runtime", args.runtime,
                                      "--seconds", str(args.seconds), "--child", v, "--seed", str(r)],
                                     capture_output=True, text=True, check=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results[v].append(res)
                print(f"round {r + 1} {v}: " + ", ".join(f"{k} {res[k]:.1f}" for k in
                                                         ("start", "first", "last", "peak", "images_per_s"))
                      + f"; RSS over the run {res['series']}",
                      file=sys.stderr, flush=True)
    print(f"\n| variant ({args.runtime}, 2 workers x 1 thread, {args.seconds:g} s x {args.rounds} rounds) | RSS after "
          "start MB | first tenth peak MB | last tenth peak MB | last - first MB | images/s |")
    print("|---|---|---|---|---|---|")
    for v, rs in results.items():
        def mean(k: str) -> float:
            return float(np.mean([x[k] for x in rs]))
        print(f"| {v} | {mean('start'):.0f} | {mean('first'):.0f} | {mean('last'):.0f} | "
              f"{mean('last') - mean('first'):+.0f} | {mean('images_per_s'):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
