"""Where a training step's time goes: Paddle's profiler, per op, for each recipe.

Usage::

    python benchmarks/step_profile.py [--models PSPNet,DANet,PSANet,PointRend]
        [--backbone ResNet50_vd] [--shape 2,3,256,256] [--threads 2] [--top 8] [--quick]

Each model is built from its Cityscapes recipe (random weights), warmed up
with one step of ``Trainer._step`` (forward, the recipe's losses, backward,
Momentum step), then one step runs under ``paddle.profiler`` (CPU). The
table lists the ops that took the most of that step, forward and backward
kernels apart (``conv2d`` vs its ``Conv2dGradNode``): time summed over
the op's outermost calls, as a share of the whole step. The first rows of
each model sum three groups (``GROUPS``): Paddle's convolution kernels,
matmuls (Winograd's GEMMs among them) and our compiled ops. One step per
model: shares, not timings.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import set_threads  # noqa: E402

MODELS = ("PSPNet", "DANet", "PSANet", "PointRend")
_NAME = re.compile(r"^(?:Global_)?([^\s\[:]+)")
# Op groups by name, forward kernels and backward grad nodes alike. Winograd's 16
# GEMMs per 3x3 conv are Paddle matmuls, so they count as "matmul", not convolution.
GROUPS = {
    "convolution kernels (conv2d, depthwise, fwd + bwd)": ("conv2d", "depthwise_conv2d", "Conv2dGradNode",
                                                           "DepthwiseConv2dGradNode"),
    "matmul / bmm (fwd + bwd; includes Winograd's GEMMs)": ("matmul", "bmm", "MatmulGradNode", "BmmGradNode"),
    "compiled ops (Winograd tiles, PSA; fwd + bwd)": ("winograd_", "psa_", "CustomOpGradNode"),
}


def op_times(events: List[dict]) -> Dict[str, float]:
    """Microseconds per op name over the outermost ``Operator`` events of each thread."""
    ops = sorted((e for e in events if e.get("cat") == "Operator" and "dur" in e),
                 key=lambda e: (e.get("tid"), e["ts"], -e["dur"]))
    totals: Dict[str, float] = collections.defaultdict(float)
    end_of: Dict[object, float] = {}
    for e in ops:
        if e["ts"] < end_of.get(e.get("tid"), float("-inf")):
            continue  # nested in an op already counted
        end_of[e.get("tid")] = e["ts"] + e["dur"]
        m = _NAME.match(e["name"])
        totals[m.group(1) if m else e["name"]] += e["dur"]
    return dict(totals)


def profile_step(arch: str, backbone: str, shape: Tuple[int, int, int, int]
                 ) -> Tuple[float, Dict[str, float]]:
    """Step time (us) and per-op times (us) of one profiled training step."""
    import paddle.profiler as profiler

    from models_vs_peer import _inputs, build_ours, our_train_step

    with tempfile.TemporaryDirectory(prefix="step_profile_") as tmp:
        work = Path(tmp)
        model, losses = build_ours(arch, backbone)
        step = our_train_step(model, losses, work)
        img, label = _inputs(shape, 19)
        step(img, label)  # warm-up: kernel selection, allocator, compiled ops loaded
        prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                                 on_trace_ready=lambda p: None)  # no ./profiler_log
        prof.start()
        step(img, label)
        prof.stop()
        trace = work / "trace.json"
        prof.export(str(trace), format="json")
        data = json.loads(trace.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    total = max(e["dur"] for e in events if e.get("cat") == "ProfileStep")
    return total, op_times(events)


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return ""


def table(arch: str, total: float, times: Dict[str, float], top: int) -> List[str]:
    rows = []
    for group in GROUPS:
        t = sum(v for n, v in times.items() if group_of(n) == group)
        rows.append(f"| {arch} | {group} | {t / 1e3:.0f} | {100 * t / total:.1f} % |")
    for name, t in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        rows.append(f"| {arch} | {name} | {t / 1e3:.0f} | {100 * t / total:.1f} % |")
    rows.append(f"| {arch} | whole step | {total / 1e3:.0f} | 100 % |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--backbone", default="ResNet50_vd")
    parser.add_argument("--shape", default="2,3,256,256", help="N,C,H,W of the training batch")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="ResNet18_vd, 1x3x64x64 (keeps the script from rotting)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    backbone, shape = (("ResNet18_vd", (1, 3, 64, 64)) if args.quick
                       else (args.backbone, tuple(int(v) for v in args.shape.split(","))))
    print(f"{backbone}, batch {'x'.join(map(str, shape))}, threads {args.threads}, one profiled step "
          "after one warm-up step")
    print("| model | op | ms | share of the step |\n|---|---|---|---|")
    for arch in args.models.split(","):
        if arch not in MODELS:
            parser.error(f"--models: unknown model {arch!r}; choose from {', '.join(MODELS)}")
        total, times = profile_step(arch, backbone, shape)
        for row in table(arch, total, times, args.top):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
