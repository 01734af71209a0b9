"""Why the deploy table and ``serve.py --runtime auto`` ranked the runtimes differently.

Both timed the same predictor classes (deploy/python/infer*.py) at the same
threads on the same random input, yet on 2026-12-07 the table had DANet's
onnxruntime at 26.9 ms and auto's probe at 16.2 ms. This script measures the
one thing that differed in how they called the runtimes: what ran on the cores
just before the timed call. A runtime's worker threads keep spinning after
its call returns (Paddle's Intel OpenMP for ``KMP_BLOCKTIME`` = 200 ms by
default, OpenVINO's TBB and onnxruntime's pool briefly), so a call that
follows another runtime's call shares the cores with those spinning threads.
The table ran its candidates in a fixed order with a 20 ms pause before each
call (quick mode), auto in another fixed order with none: each runtime had a
different, fixed neighbour in each routine.

``--experiment neighbours``: for every pair (``before``, ``timed``) and pause,
``timed`` is called right after one ``before`` call and that pause; trials of
all pairs are shuffled together, so the machine's load falls on all alike. The
table printed is the median ms of ``timed`` per cell, and its ratio to the cell
where ``timed`` follows itself with a long pause.

``--experiment routines``: the two old routines (the table's: fixed order
paddle, paddle-mkldnn, onnx, openvino, 20 ms before each call; auto's: fixed
order onnx, openvino, paddle, paddle-mkldnn, no pause) and the shared one now
in serve_runtime.py (:func:`serve_runtime.time_candidates`), each run
``--repeat`` times in turn on the same predictors: the spread of one
routine's medians between its repetitions is what a single run of it could
report.

``--experiment sustained``: each runtime in blocks of ``--block`` calls back to
back (a service under sustained load), blocks in rotating order after the
shared routine's pause, the median call of each block's second half; next to
the shared routine's figure for the same predictors: whether one untimed call
before the timed one stands in for a runtime that is kept busy.

``--experiment programs``: Paddle Inference (+ oneDNN) on the plain export
and on the ONNX export's Paddle program (what the service runs on an ONNX
export: PSPNet's pooling as a matmul, PSANet's PSA mask in plain Paddle),
timed by the shared routine.

    python benchmarks/timing_neighbours.py [--experiment neighbours] [--models danet,pspnet] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: pauses (s) between the ``before`` call and the timed call: none (auto's probe), the table's quick-mode
#: settle, and longer than Intel OpenMP's 200 ms blocktime (nothing spins any more)
PAUSES = (0.0, 0.02, 0.3)


def export_quick(name: str, workdir: Path) -> str:
    """The model's quick recipe (ResNet18_vd) exported to ONNX as the deploy section does; its folder."""
    import paddle

    import deployment
    import paddleseg_ext.models  # noqa: F401  (registers the models)
    from paddleseg_ext.cvlibs import SegBuilder
    from paddleseg_ext.runtime import policy_from_environment

    paddle.seed(0)
    impl = deployment.psa_impl_available()
    cfg = deployment.load_recipe(name, True, [f"model.psa_impl={impl}"] if name == "psanet" else [])
    builder = SegBuilder(cfg)
    model = builder.model
    model.eval()
    policy = policy_from_environment(target="infer", **builder.policy_overrides)
    dirs = deployment._export(name, model, cfg, workdir, policy)
    if dirs["onnx"] is None:
        raise RuntimeError(f"{name}: {dirs['onnx_note']}")
    return dirs["onnx"]


def neighbour_matrix(runners: Dict[str, Callable[[], Any]], trials: int, seed: int = 0) -> Dict[tuple, float]:
    """Median ms of each runner called right after ``before`` and a pause, for every pair."""
    cells = [(b, t, p) for t in runners for b in runners for p in PAUSES]
    times: Dict[tuple, List[float]] = {c: [] for c in cells}
    order = [c for _ in range(trials) for c in cells]
    random.Random(seed).shuffle(order)
    gc.collect()
    gc.disable()
    try:
        for before, timed, pause in order:
            time.sleep(0.25)  # every trial starts from idle cores (past the 200 ms blocktime)
            runners[before]()
            time.sleep(pause)
            start = time.perf_counter()
            runners[timed]()
            times[(before, timed, pause)].append(1e3 * (time.perf_counter() - start))
    finally:
        gc.enable()
    return {c: statistics.median(v) for c, v in times.items()}


def old_routine(runners: Dict[str, Callable[[], Any]], rounds: int, order: Sequence[str],
                pause: float) -> Dict[str, float]:
    """A routine of before the shared one: a fixed order, ``pause`` before each call. The table's:
    paddle, paddle-mkldnn, onnx, openvino with 20 ms (quick mode); auto's: onnx, openvino, paddle,
    paddle-mkldnn with none."""
    times: Dict[str, List[float]] = {k: [] for k in order}
    for _ in range(rounds):
        for k in order:
            time.sleep(pause)
            start = time.perf_counter()
            runners[k]()
            times[k].append(1e3 * (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in times.items()}


def shared_routine(runners: Dict[str, Callable[[], Any]], rounds: int) -> Dict[str, float]:
    """serve_runtime.time_candidates, the routine both now use."""
    import serve_runtime

    times = serve_runtime.time_candidates({k: (lambda _x, f=f: f()) for k, f in runners.items()}, None, rounds)
    return {k: statistics.median(v) for k, v in times.items()}


def routines(name: str, runners: Dict[str, Callable[[], Any]], args: argparse.Namespace) -> None:
    """Each routine ``args.repeat`` times in turn; one line of medians per run."""
    print(f"\n### {name}: median ms per routine run ({args.rounds} rounds, 1x3x64x64, {args.threads} threads)\n")
    names = list(runners)
    print("| routine | run | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    routines_ = {
        "table (old)": lambda r, n: old_routine(r, n, ("paddle", "paddle-mkldnn", "onnx", "openvino"), 0.02),
        "auto (old)": lambda r, n: old_routine(r, n, ("onnx", "openvino", "paddle", "paddle-mkldnn"), 0.0),
        "shared": shared_routine,
    }
    for rep in range(args.repeat):
        for label, routine in routines_.items():
            gc.collect()
            gc.disable()
            try:
                ms = routine(runners, args.rounds)
            finally:
                gc.enable()
            print(f"| {label} | {rep + 1} | " + " | ".join(f"{ms[k]:.1f}" for k in names) + " |", flush=True)


def sustained(name: str, runners: Dict[str, Callable[[], Any]], args: argparse.Namespace) -> None:
    """Back-to-back blocks per runtime against the shared routine, in alternating runs."""
    import serve_runtime

    names = list(runners)
    block: Dict[str, List[float]] = {k: [] for k in names}
    gc.collect()
    gc.disable()
    try:
        shared = shared_routine(runners, args.rounds)
        for r in range(args.rounds):
            shift = r % len(names)
            for k in names[shift:] + names[:shift]:
                time.sleep(serve_runtime.SETTLE_S)
                calls = []
                for _ in range(args.block):
                    start = time.perf_counter()
                    runners[k]()
                    calls.append(1e3 * (time.perf_counter() - start))
                block[k].append(statistics.median(calls[args.block // 2:]))
    finally:
        gc.enable()
    print(f"\n### {name}: median ms, shared routine ({args.rounds} rounds) vs back to back (median of the "
          f"second half of {args.block}-call blocks, {args.rounds} blocks each; 1x3x64x64, {args.threads} threads)\n")
    print("| runtime | shared routine | back to back | back to back / shared |")
    print("|---|---|---|---|")
    for k in names:
        b = statistics.median(block[k])
        print(f"| {k} | {shared[k]:.1f} | {b:.1f} | {b / shared[k]:.2f} |", flush=True)


def programs(name: str, cfg: Any, infer: Any, args: argparse.Namespace, x: np.ndarray) -> None:
    """Paddle Inference on the plain export vs on the ONNX export's Paddle program."""
    from serve import make_predictor_for

    plain_dir = Path(cfg.dir).parent / f"{name}_paddle"
    if not plain_dir.is_dir():
        print(f"\n{name}: the ONNX export's Paddle program is the plain model (no export rewrites)")
        return
    plain = infer.DeployConfig(str(plain_dir))
    runners = {}
    for runtime in ("paddle", "paddle-mkldnn"):
        for label, c in (("plain export", plain), ("ONNX export's program", cfg)):
            pred = make_predictor_for(c, runtime, args.threads)
            pred.run(x)
            runners[f"{runtime}, {label}"] = lambda pr=pred: pr.run(x)
    ms = shared_routine(runners, args.rounds)
    print(f"\n### {name}: Paddle Inference, median ms ({args.rounds} rounds, shared routine)\n")
    for k, v in ms.items():
        print(f"- {k}: {v:.1f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="danet,pspnet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--experiment", default="neighbours", choices=("neighbours", "routines", "sustained", "programs"))
    p.add_argument("--block", type=int, default=16, help="sustained: calls per block")
    p.add_argument("--trials", type=int, default=8, help="neighbours: calls per cell (median reported)")
    p.add_argument("--rounds", type=int, default=15, help="routines, programs: rounds per routine run")
    p.add_argument("--repeat", type=int, default=3, help="routines: runs of each routine")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]

    import paddleseg_ext  # noqa: F401  (MKL code path before any MKL call, as in every tool)
    from common import set_threads

    set_threads(args.threads)
    from deployment import _deploy_modules

    infer, _ = _deploy_modules()
    from serve import make_predictor_for

    x = np.random.RandomState(0).standard_normal((1, 3, 64, 64)).astype("float32")
    with tempfile.TemporaryDirectory(prefix="neighbours_") as tmp:
        for name in args.models:
            cfg = infer.DeployConfig(export_quick(name, Path(tmp)))
            if args.experiment == "programs":
                programs(name, cfg, infer, args, x)
                continue
            runners = {}
            for runtime in ("onnx", "openvino", "paddle", "paddle-mkldnn"):
                pred = make_predictor_for(cfg, runtime, args.threads)
                pred.run(x)
                runners[runtime] = lambda pr=pred: pr.run(x)
            if args.experiment == "routines":
                routines(name, runners, args)
                continue
            if args.experiment == "sustained":
                sustained(name, runners, args)
                continue
            start = time.perf_counter()
            cells = neighbour_matrix(runners, args.trials)
            print(f"\n### {name}: ms of `timed` called right after one `before` call and a pause "
                  f"(1x3x64x64, {args.threads} threads, median of {args.trials}; x = over `timed` after "
                  f"itself and 300 ms; {time.perf_counter() - start:.0f} s)\n")
            names = list(runners)
            print("| timed | before | " + " | ".join(f"pause {1e3 * q:.0f} ms" for q in PAUSES) + " |")
            print("|---|---|" + "---|" * len(PAUSES))
            for timed in names:
                base = cells[(timed, timed, PAUSES[-1])]
                for before in names:
                    row = " | ".join(f"{cells[(before, timed, q)]:.1f} ({cells[(before, timed, q)] / base:.2f}x)"
                                     for q in PAUSES)
                    print(f"| {timed} | {before} | {row} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
