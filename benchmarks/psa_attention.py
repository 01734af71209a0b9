"""Fused PSA attention vs the unfused composition: forward+backward time and peak memory.

PSA attention: PSANet (Zhao et al., ECCV 2018,
https://hszhao.github.io/papers/eccv18_psanet.pdf). Candidates, one direction
(collect), float32, at PSANet's Cityscapes training size (N=1, C=512, 59x59
mask, 32x64 map: a 1024x512 crop at output stride 8, shrunk 2x) and at 2x and
4x the map side:

* ``unfused``: compiled ``psa_mask`` op, ``channel_softmax``, ``bmm`` (what
  ``psa_impl: op`` runs), ``[P, P]`` maps with ``P = H*W``;
* ``fused``: the compiled ``psa_attention`` op (``O(P * (C + mh*mw))``);
* ``unfused GEMMs only`` (where unfused does not fit in memory): the three
  GEMMs of unfused's ``bmm`` (forward, and the gradients of both operands) on
  one ready ``[P, P]`` map, without ``psa_mask``, the softmax or their
  backward: a lower bound of the unfused time that needs two maps, not six.

Each (size, candidate) runs in its own process: the time is the median of
timed fwd+bwd calls after a warm-up, the memory is the peak RSS during those
calls minus the RSS before them (``VmHWM`` reset with ``clear_refs``). The
unfused candidate is not started where its estimated peak exceeds the memory
limit below (the row says so). Targets (issue 12): fused time <= 1.0x unfused
at the recipe size (PSANet dispatches to unfused where that is faster), <= 0.5x
at 4x the side; fused peak memory <= 0.25x unfused at 2x the side.

Child usage: ``python benchmarks/psa_attention.py --child N C H W MH MW IMPL
WARMUP REPEATS THREADS`` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Context, Section, ratio, rss_mb, run_child, set_threads  # noqa: E402

# (label, N, C, H, W, mask_h, mask_w, warmup, repeats)
FULL_SIZES = [("recipe 32x64", 1, 512, 32, 64, 59, 59, 1, 3),
              ("2x side 64x128", 1, 512, 64, 128, 59, 59, 1, 3),
              ("4x side 128x256", 1, 512, 128, 256, 59, 59, 0, 1)]
QUICK_SIZES = [("quick 8x8", 1, 16, 8, 8, 9, 9, 1, 2), ("quick 16x16", 1, 16, 16, 16, 9, 9, 1, 2)]
# An unfused child is started only if 6 [P, P] float32 maps (mask, softmax and its
# transposes, their gradients: measured 5.6 at 2x) fit in this many MiB.
UNFUSED_LIMIT_MB = 12 * 1024
COLUMNS = ["size", "impl", "fwd+bwd ms", "fused / unfused time", "peak memory MiB",
           "fused / unfused memory", "note"]


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def child(n: int, c: int, h: int, w: int, mh: int, mw: int, impl: str, warmup: int,
          repeats: int, threads: int) -> Dict[str, Any]:
    """Time ``warmup + repeats`` fwd+bwd calls of one candidate; measure its peak memory."""
    set_threads(threads)
    import paddle

    from paddleseg_ext.models.layers.softmax import channel_softmax
    from paddleseg_ext.ops import psa_attention, psa_mask

    plane = h * w
    # Inputs made by Paddle directly: large freed NumPy temporaries would stay in
    # the heap (run.py's malloc settings) and hide the step's allocations from RSS.
    paddle.seed(0)
    x = paddle.randn([n, c, h, w], dtype="float32")
    a = paddle.randn([n, mh * mw, h, w], dtype="float32")
    dout = paddle.randn([n, c, h, w], dtype="float32")
    x.stop_gradient = False
    a.stop_gradient = False
    if impl == "unfused_gemms":  # the map is an input here: made before the RSS baseline
        y_ready = paddle.randn([n, plane, plane], dtype="float32")
        y_ready.stop_gradient = False

    def step():
        if impl == "unfused_gemms":
            out = paddle.bmm(x.reshape([n, c, plane]), y_ready).reshape([n, c, h, w])
            grads = paddle.grad([out], [x, y_ready], [dout])
            return float(grads[0].sum()) + float(grads[1].sum())
        if impl == "fused":
            out = psa_attention(x, a, "collect", 1.0, True, (mh, mw), impl="op")
        else:
            y = channel_softmax(psa_mask(a, "collect", (mh, mw), impl="op").reshape([n, plane, plane]))
            out = paddle.bmm(x.reshape([n, c, plane]), y).reshape([n, c, h, w])
        grads = paddle.grad([out], [x, a], [dout])
        return float(grads[0].sum()) + float(grads[1].sum())  # forces the work

    before = rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    times = []
    for k in range(warmup + repeats):
        t0 = time.perf_counter()
        step()
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return {"ms": statistics.median(times), "peak_mb": _vm_hwm_mb() - before,
            "rss_before_mb": before}


def _estimate_unfused_mb(n: int, plane: int) -> float:
    return 6.0 * n * plane * plane * 4 / 2 ** 20


def candidates(n: int, plane: int) -> List[str]:
    """The candidates run at one size: the GEMM lower bound only where unfused does not fit
    and the bound's two maps (a third of unfused's six) do."""
    est = _estimate_unfused_mb(n, plane)
    extra = ["unfused_gemms"] if est > UNFUSED_LIMIT_MB >= est / 3 else []
    return ["unfused", "fused"] + extra


def run(ctx: Context) -> Section:
    """Each size: the unfused and the fused candidate, each in its own process."""
    from paddleseg_ext.ops import build_attention_op, build_op

    build_op()
    so_path = build_attention_op()  # built here once; the children only load them
    section = Section("psa_attention", "Fused PSA attention vs unfused: fwd+bwd time and peak "
                      "memory (CPU, float32, collect)", COLUMNS)
    for label, n, c, h, w, mh, mw, warmup, repeats in (QUICK_SIZES if ctx.quick else FULL_SIZES):
        if ctx.quick:
            warmup, repeats = ctx.warmup, ctx.repeats
        res: Dict[str, Dict[str, Any]] = {}
        est = _estimate_unfused_mb(n, h * w)
        impls = candidates(n, h * w)
        for impl in impls:
            if impl == "unfused" and est > UNFUSED_LIMIT_MB:
                res[impl] = {"error": f"not run: estimated {est / 1024:.0f} GiB > "
                                      f"{UNFUSED_LIMIT_MB / 1024:.0f} GiB limit"}
                continue
            ctx.log(f"[psa_attention] {label} {impl}")
            args = [str(Path(__file__).resolve()), "--child", *map(str, (
                n, c, h, w, mh, mw, impl, warmup, repeats, ctx.threads))]
            res[impl] = run_child(args, timeout=600 if ctx.quick else 3600)
        base = res["unfused"]
        bound = res.get("unfused_gemms", {})
        for impl in impls:
            r = res[impl]
            name = "unfused GEMMs only (lower bound)" if impl == "unfused_gemms" else impl
            row: Dict[str, Optional[Any]] = {"size": label, "impl": name, "note": r.get("error")}
            if "error" not in r:
                row["fwd+bwd ms"] = r["ms"]
                row["peak memory MiB"] = r["peak_mb"]
            if impl == "fused" and "error" not in r and "error" not in base:
                row["fused / unfused time"] = ratio(r["ms"], base["ms"])
                row["fused / unfused memory"] = ratio(r["peak_mb"], base["peak_mb"])
            elif impl == "fused" and "error" not in r and bound and "error" not in bound:
                row["fused / unfused time"] = ratio(r["ms"], bound["ms"])
                row["note"] = "time ratio against the unfused lower bound: unfused is at least this much slower"
            section.rows.append(row)
    section.notes += [
        ("quick mode: N=1, C=16, 9x9 mask" if ctx.quick else "N=1, C=512, 59x59 mask")
        + ", psa_type collect, softmax on; each (size, impl) in its own "
        "process, run one after the other: time = median of the timed fwd+bwd calls after "
        "warm-up (4x side: one call), memory = peak RSS during the calls minus RSS before.",
        f"unfused = psa_mask op + channel_softmax + bmm; fused = psa_attention op ({so_path}).",
        "unfused GEMMs only: where unfused does not fit, the forward bmm and its two gradient "
        "GEMMs on one ready [P, P] map; the real unfused step does that and more, so fused / "
        "lower bound is an upper bound of fused / unfused.",
        "targets: fused time <= 1.0x at the recipe size (PSANet's psa_impl=fused runs the unfused "
        "path on maps of <= 16384 positions), <= 0.5x at 4x side; memory <= 0.25x at 2x side.",
    ]
    return section


def child_main(argv) -> int:
    n, c, h, w, mh, mw = (int(v) for v in argv[:6])
    impl = argv[6]
    warmup, repeats, threads = (int(v) for v in argv[7:10])
    print(json.dumps(child(n, c, h, w, mh, mw, impl, warmup, repeats, threads)), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        import paddleseg_ext  # noqa: F401 - the package's MKL choice, as in every process

        sys.exit(child_main(sys.argv[2:]))
    sys.exit("run through benchmarks/run.py --sections psa_attention")
