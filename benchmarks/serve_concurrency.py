"""Images/s of each serving runtime with one predictor, and with the service's workers calling at once.

``serve.py`` runs ``--workers`` predictors (1 thread each by default) side by side; ``--runtime
auto`` times each runtime alone. This script shows whether a runtime's predictors scale when they
run together: each round builds ``--workers`` predictors per runtime (as the service builds them)
and times ``--calls`` calls of a ``--batch``-image input on one predictor, then on all of them in
threads at once. Rounds alternate the runtimes; the median of the rounds is printed.

    python benchmarks/serve_concurrency.py --config <export dir>/deploy.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "python"))
from infer import DeployConfig  # noqa: E402
from serve import make_predictor_for  # noqa: E402


def images_per_s(predictors: List, x: np.ndarray, calls: int) -> float:
    """Images/s of ``calls`` calls on each predictor, all predictors in threads at once."""
    def loop(p) -> None:
        for _ in range(calls):
            p.run(x)

    threads = [threading.Thread(target=loop, args=(p,)) for p in predictors]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(predictors) * calls * x.shape[0] / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="deploy.yaml of an export with an ONNX model")
    p.add_argument("--runtimes", nargs="+", default=["onnx", "openvino"])
    p.add_argument("--workers", type=int, default=2, help="serve.py --workers")
    p.add_argument("--threads", type=int, default=1, help="threads per predictor (serve.py's default on 2 cores)")
    p.add_argument("--batch", type=int, default=4, help="images per call (the mean micro-batch under load)")
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    cfg = DeployConfig(args.config, "onnx")
    x = np.random.RandomState(0).standard_normal(
        (args.batch, cfg.transforms.img_channels, args.side, args.side)).astype(np.float32)
    results: Dict[Tuple[str, int], List[float]] = {}
    for _ in range(args.rounds):
        for runtime in args.runtimes:
            predictors = [make_predictor_for(cfg, runtime, args.threads) for _ in range(args.workers)]
            for pr in predictors:
                pr.run(x)  # first-call set-up, untimed
            for n in sorted({1, args.workers}):
                results.setdefault((runtime, n), []).append(images_per_s(predictors[:n], x, args.calls))
            del predictors
    print(f"| runtime | predictors at once | images/s (median of {args.rounds}) | rounds | scaling |")
    print("|---|---|---|---|---|")
    for runtime in args.runtimes:
        one = statistics.median(results[(runtime, 1)])
        for n in sorted({1, args.workers}):
            v = results[(runtime, n)]
            print(f"| {runtime} | {n} | {statistics.median(v):.0f} | {', '.join(f'{a:.0f}' for a in v)} "
                  f"| {statistics.median(v) / one:.2f}x |")
    print(f"- {args.batch}x{cfg.transforms.img_channels}x{args.side}x{args.side} per call, {args.threads} "
          f"thread(s) per predictor, {args.calls} calls per predictor per round; load average "
          + ", ".join(f"{a:.1f}" for a in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
