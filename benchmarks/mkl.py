"""MKL's code path on this CPU: plain Paddle vs Paddle after ``import paddleseg_ext``.

Paddle's CPU wheels run every ``conv2d`` and ``matmul`` through the MKL they
ship, which on AMD processors takes a generic path unless
``MKL_DEBUG_CPU_TYPE=5`` selects its AVX2 kernels; importing ``paddleseg_ext``
sets that where it applies (:mod:`paddleseg_ext.utils.mkl_dispatch`). MKL
reads the variable once, on its first call, so each candidate runs in its own
process (this file with ``--child``), alternating, and the two are compared
as ratios of GFLOP/s measured in the same run:

* ``plain Paddle``: the environment without the variable and with
  ``PADDLESEG_EXT_MKL_DISPATCH=0``: what PaddleSeg or any Paddle program gets;
* ``paddleseg_ext``: the environment after ``import paddleseg_ext`` in the
  parent (the variable set when this CPU qualifies, else unchanged).

Kernels: ``matmul`` 1024x4608 @ 4608x2048, and a 3x3 ``conv2d`` 512 -> 1024
channels on 1x512x64x128 (PSPNet's bottleneck shape at 512x1024 input is
4096 -> 1024 on 64x128), forward and forward + backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Context, Section, plain_paddle_env, ratio, run_child  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
COLUMNS = ["kernel", "shape", "plain Paddle GFLOP/s", "paddleseg_ext GFLOP/s",
           "paddleseg_ext / plain"]


def _gflops(fn, flops: float, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def child_main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure the kernels in this process; print one JSON line."""
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import os

    import paddle  # never paddleseg_ext here: that would choose the MKL path

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(args.threads)
    m, k, n = (256, 1152, 512) if args.quick else (1024, 4608, 2048)
    cin, cout, h, w = (64, 128, 16, 32) if args.quick else (512, 1024, 64, 128)
    a, b = paddle.randn([m, k]), paddle.randn([k, n])
    conv = paddle.nn.Conv2D(cin, cout, 3, padding=1)
    x = paddle.randn([1, cin, h, w])
    xg = paddle.randn([1, cin, h, w])
    xg.stop_gradient = False
    conv_flops = 2.0 * cin * 9 * cout * h * w

    def conv_fwd() -> None:
        with paddle.no_grad():
            conv(x).numpy()

    def conv_fwd_bwd() -> None:
        conv(xg).sum().backward()
        conv.clear_gradients()
        xg.clear_gradient()

    out = {
        "env": os.environ.get("MKL_DEBUG_CPU_TYPE"),
        "matmul": _gflops(lambda: paddle.matmul(a, b).numpy(), 2.0 * m * k * n, 1, args.repeats),
        "conv fwd": _gflops(conv_fwd, conv_flops, 1, args.repeats),
        # backward: grads of input and weight, 2x the forward's FLOPs
        "conv fwd+bwd": _gflops(conv_fwd_bwd, 3 * conv_flops, 1, args.repeats),
        "shapes": {"matmul": f"{m}x{k} @ {k}x{n}",
                   "conv fwd": f"1x{cin}x{h}x{w}, 3x3, {cin}->{cout}",
                   "conv fwd+bwd": f"1x{cin}x{h}x{w}, 3x3, {cin}->{cout}"},
    }
    print(json.dumps(out))
    return 0


def run(ctx: Context) -> Section:
    import paddleseg_ext  # noqa: F401  (applies the dispatch to this process's environment)
    from paddleseg_ext.utils import mkl_dispatch

    section = Section("mkl", "MKL code path: plain Paddle vs after import paddleseg_ext "
                      "(GFLOP/s, alternating processes)", COLUMNS)
    plain = plain_paddle_env()
    args = [SCRIPT, "--child", "--threads", str(ctx.threads), "--repeats", str(ctx.repeats)]
    if ctx.quick:
        args.append("--quick")
    results: Dict[str, List[Dict[str, Any]]] = {"plain": [], "ours": []}
    rounds = 1 if ctx.quick else 2
    for r in range(rounds):
        for side in (("plain", "ours") if r % 2 == 0 else ("ours", "plain")):
            ctx.log(f"[mkl] {side} Paddle, round {r + 1}")
            # "ours" inherits this process's environment, the variable as applied.
            out = run_child(args, timeout=600, base_env=plain if side == "plain" else None)
            if "error" in out:
                raise RuntimeError(f"{side} child failed: {out['error']}")
            results[side].append(out)
    first = results["ours"][0]
    for kernel in ("matmul", "conv fwd", "conv fwd+bwd"):
        p = statistics.median(o[kernel] for o in results["plain"])
        o = statistics.median(o[kernel] for o in results["ours"])
        section.rows.append({"kernel": kernel, "shape": first["shapes"][kernel],
                             "plain Paddle GFLOP/s": p, "paddleseg_ext GFLOP/s": o,
                             "paddleseg_ext / plain": ratio(o, p)})
    section.notes += [
        f"MKL_DEBUG_CPU_TYPE in the paddleseg_ext child: {first['env']!r} (set by "
        f"paddleseg_ext: {mkl_dispatch.applied}; this CPU qualifies: "
        f"{mkl_dispatch.wants_avx2_path(mkl_dispatch._cpuinfo())}); plain child: "
        f"{results['plain'][0]['env']!r}.",
        f"{ctx.threads} threads; median of {ctx.repeats} timed calls after 1 warm-up per "
        f"process, {rounds} process(es) per side, alternating.",
        "On a CPU that does not qualify (Intel, or AMD without AVX2/FMA) both columns are the "
        "same Paddle and the ratio is noise around 1.",
    ]
    return section


if __name__ == "__main__":
    sys.exit(child_main())
