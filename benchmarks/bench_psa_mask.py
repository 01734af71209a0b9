"""Benchmark the PSA mask op against pure Paddle and a memory-bound floor.

PSA mask: PSANet (Zhao et al., ECCV 2018,
https://hszhao.github.io/papers/eccv18_psanet.pdf).

For each size, times (median of repeats after warmup, CPU):

* ``op``: the compiled custom op (``impl='op'``);
* ``paddle``: the pure-Paddle gather (``impl='paddle'``);
* ``floor``: moving the same bytes with no index logic: a zero-filled tensor
  the size of the pass's output plus a copy of its input (forward: zeros like
  y + copy of x; backward: zeros like dx + copy of dy), both as fresh Paddle
  tensors, like the op's own allocation.

Prints a Markdown table with each time's ratio to the floor. Targets:
compiled fwd+bwd within 1.5x of the floor, pure Paddle within 3x.

Allocation: every candidate allocates fresh output tensors. With glibc's
default settings, blocks of several MB are mmap-ed and unmapped per call, so a
run can be dominated by page faults (on this VM zeroing a fresh 16 MB tensor
takes ~2x as long as zeroing a recycled one), and which candidate pays them
depends on the order of frees. By default the script therefore re-executes
itself with ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` raised so
that freed blocks are recycled, as a caching allocator would; pass
``--default-malloc`` to measure glibc's defaults instead.

Usage::

    python benchmarks/bench_psa_mask.py [--quick] [--threads N] [--default-malloc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

# (label, N, mask_h, mask_w, H, W)
SIZES = [
    ("PSANet (N=1, 59x59 mask, 32x64 map)", 1, 59, 59, 32, 64),
    ("small (N=2, 13x13 mask, 16x16 map)", 2, 13, 13, 16, 16),
]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the op and Paddle (default: each library's own)",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's malloc defaults (fresh, page-faulting MB-sized blocks)",
    )
    return parser.parse_args(argv)


_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def _interleaved_medians(
    fns: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, float]:
    """Median wall time (ms) of each callable.

    Rounds run every callable once in turn, so a burst of load from other
    processes on a shared machine hits all candidates alike instead of
    skewing one of them.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the Markdown table.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        Process exit code.
    """
    args = _parse_args(argv)
    if not args.default_malloc and any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
        # glibc reads these at process start only.
        env = dict(os.environ, **_MALLOC_ENV)
        cmd = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
        return subprocess.call(cmd, env=env)
    if args.threads:
        # Before importing paddle: its OpenMP runtime reads this at start-up.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["PSA_MASK_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import numpy as np
    import paddle

    from paddleseg_ext.ops import load_op_library, psa_mask

    if args.threads:
        paddle.base.core.set_num_threads(args.threads)
    paddle.set_device("cpu")
    _, so_path = load_op_library(build=True)
    warmup, repeats = (2, 5) if args.quick else (3, 15)

    rows = []
    for label, n, mh, mw, h, w in SIZES:
        rng = np.random.default_rng(0)
        x = paddle.to_tensor(
            rng.standard_normal((n, mh * mw, h, w)).astype(args.dtype),
            stop_gradient=False,
        )
        dy = paddle.to_tensor(
            rng.standard_normal((n, h * w, h, w)).astype(args.dtype)
        )
        y_shape, x_shape = [n, h * w, h, w], [n, mh * mw, h, w]

        def floor_fwd() -> None:
            paddle.zeros(y_shape, dtype=args.dtype)
            paddle.assign(x.detach())

        def floor_bwd() -> None:
            paddle.zeros(x_shape, dtype=args.dtype)
            paddle.assign(dy)

        fwd_fns: dict[str, Callable[[], object]] = {"floor": floor_fwd}
        bwd_fns: dict[str, Callable[[], object]] = {"floor": floor_bwd}
        for impl in ("op", "paddle"):
            for psa_type in ("collect", "distribute"):
                name = f"{impl} {psa_type}"

                def fwd(impl: str = impl, psa_type: str = psa_type) -> None:
                    with paddle.no_grad():
                        psa_mask(x, psa_type, (mh, mw), impl=impl)

                # Backward alone: replay the grad of one recorded forward.
                y = psa_mask(x, psa_type, (mh, mw), impl=impl)

                def bwd(y: paddle.Tensor = y) -> None:
                    paddle.grad([y], [x], [dy], retain_graph=True)

                fwd_fns[name], bwd_fns[name] = fwd, bwd
        fwd_ms = _interleaved_medians(fwd_fns, warmup, repeats)
        bwd_ms = _interleaved_medians(bwd_fns, warmup, repeats)
        floor = (fwd_ms["floor"], bwd_ms["floor"])
        for name in fwd_fns:
            shown = "floor (zero-fill + copy)" if name == "floor" else name
            rows.append((label, shown, fwd_ms[name], bwd_ms[name], floor))

    threads = args.threads or "default"
    malloc = "glibc defaults" if args.default_malloc else "freed blocks recycled"
    print(f"\nPSA mask CPU benchmark ({args.dtype}, threads={threads}, malloc: {malloc}, "
          f"{'quick' if args.quick else 'full'}; median of {repeats} after {warmup} warmup)")
    print(f"op library: {so_path}\n")
    print("| size | impl | fwd ms | bwd ms | fwd+bwd ms | fwd / floor | bwd / floor | fwd+bwd / floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, impl, fwd, bwd, (ffwd, fbwd) in rows:
        print(
            f"| {label} | {impl} | {fwd:.3f} | {bwd:.3f} | {fwd + bwd:.3f} | "
            f"{fwd / ffwd:.2f}x | {bwd / fbwd:.2f}x | {(fwd + bwd) / (ffwd + fbwd):.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
