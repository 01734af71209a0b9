"""Scaling: train-step time and peak memory against input size, per model.

A training step here is exactly our trainer's:
:meth:`paddleseg_ext.core.train.Trainer.run_step` (forward in train mode,
:func:`~paddleseg_ext.core.train.compute_losses` with the builder's losses,
backward, the recipe's SGD-momentum step, LR schedule step), batch 1, on a
random image and random labels, for the R50 Cityscapes recipes of PSPNet,
DANet, PSANet and PointRend (ResNet18_vd in quick mode; random init, nothing
downloaded) at square inputs of growing side.

Why child processes: peak memory is ``ru_maxrss``, which only ever grows, so
every (model, impl, size) runs in its own process (this file with
``--child``, printing one JSON line). It reports the step time (median after
a warm-up step), the peak RSS, and the *step memory*: peak RSS minus the RSS
just before the first step (model and input already built), i.e. the
activations, gradients, optimizer state and workspace a step adds.

Two models hold a map over all pairs of stage-4 positions, so part of their
memory grows with the square of the pixel count while the rest grows
linearly: DANet's position attention (``[HW, HW]`` at output stride 8) and
PSANet's point-wise attention (``[hw, hw]`` per direction on the map shrunk
by ``shrink_factor``). PSANet runs twice per size: ``impl op`` (the compiled
``psa_mask`` op) and ``impl paddle`` (the pure-Paddle gather with an int64
index map). Before each child the memory is extrapolated from the smaller
sizes of the same series (``a + b * pixels`` plus the attention term, whose
bytes per element were measured on the attention modules alone); a size
estimated above 80 % of MemAvailable is not run and is reported as not
fitting. One size beyond the measured ones is estimated only, to show where
each model stops fitting. A killed or timed-out child is an error row, not a
crash.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __name__ == "__main__":  # run as a child: make common/deployment and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Context, Section, fmt, peak_rss_mb, rss_mb, run_child, set_threads  # noqa: E402
from deployment import RECIPES, backbone_name, load_recipe, psa_impl_available  # noqa: E402

QUICK_SIZES = [32, 64, 128]
FULL_SIZES = [256, 512, 1024]
# One more size per mode, estimated only (never run): where the models stop fitting.
PROBE_SIZE = {True: 256, False: 2048}
# Table order.
SERIES: List[Tuple[str, str]] = [("pspnet", "-"), ("danet", "-"), ("psanet", "op"),
                                 ("psanet", "paddle"), ("pointrend", "-")]
# Run order within a size: when the time budget runs out at the largest size,
# the series the issue is about (PSANet's two paths, then DANet's attention) have run.
PRIORITY = [("psanet", "op"), ("psanet", "paddle"), ("danet", "-"), ("pspnet", "-"),
            ("pointrend", "-")]
FIT_FRACTION = 0.8
# Peak bytes a train step adds per element of the all-pairs attention maps,
# measured on the modules alone (forward + backward, maps from 48x48 to 80x80
# positions, run.py's malloc settings). PAM: ~24 B (energy, softmax, their
# gradients). PSA op: ~19 B (mask output, softmax output, gradients). PSA pure
# Paddle: 33-60 B (plus the cached int64 index map and its construction
# temporaries). Rounded up: the estimate decides what is safe to launch on a
# shared machine.
ATTN_BYTES_PER_ELEMENT = {("danet", "-"): 25.0, ("psanet", "op"): 20.0, ("psanet", "paddle"): 45.0}
TIMED_STEPS = 3
# Quick mode runs two children side by side (1 thread each when ctx.threads is 2):
# ~15 process start-ups (importing Paddle ~2 s each) one after another would not
# fit the smoke test's minute. Full mode runs one child at a time.
QUICK_WORKERS = 2
# A step predicted longer than this is timed once after the warm-up step, to keep
# the full section near 15 minutes on 2 cores. The warm-up step is never dropped:
# the first step's peak is lower than the steady state's (gradient buffers live on
# after clear_grad; R50 PSPNet at 512: 2.4 vs 3.3 GiB), so memory needs two steps.
LONG_STEP_S = 30.0
# Wall-clock budget for the children; a child predicted to overrun it is skipped.
BUDGET_S = {True: 300.0, False: 17 * 60.0}

SCRIPT = str(Path(__file__).resolve())


# --------------------------------------------------------------------------
# Child: one measurement
# --------------------------------------------------------------------------

def vm_hwm_mb() -> float:
    """Peak RSS of this process image in MiB (/proc/self/status VmHWM).

    Not ``ru_maxrss``: Linux carries that across fork and exec, so a child starts
    with its parent's RSS as its "peak" (run.py holds >1 GiB after the deploy
    section, which every child would report).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (``/proc/self/clear_refs``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(model_name: str, impl: str, size: int, quick: bool, threads: int, warmup: int,
            steps: int) -> Dict[str, Any]:
    """Build the recipe, then run ``warmup + steps`` train steps at ``size x size``.

    Returns:
        The JSON record: median step time, peak RSS, RSS before the first step,
        step memory (their difference), parameter MiB and the PSA impl that ran.
    """
    set_threads(threads)
    import numpy as np
    import paddle

    import paddleseg_ext.models  # noqa: F401  (registers the models)
    from paddleseg_ext.core.train import Trainer
    from paddleseg_ext.cvlibs import SegBuilder

    from paddleseg_ext.runtime import policy_from_environment, prepare

    cfg = load_recipe(model_name, quick)
    builder = SegBuilder(cfg)
    paddle.seed(0)
    model = builder.model
    model = prepare(model, policy_from_environment(target="train",
                                                   psa_impl="auto" if impl == "-" else impl))
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        # Trainer.run_step is the training step tools/train.py runs; no data loader,
        # hooks or checkpoints are involved.
        trainer = Trainer(model, builder.optimizer, builder.loss, None,
                          iters=max(cfg.iters, warmup + steps), batch_size=1, save_dir=tmp,
                          handle_signals=False)
        rng = np.random.RandomState(0)
        img = paddle.to_tensor(rng.standard_normal((1, 3, size, size)).astype("float32"))
        label = paddle.to_tensor(rng.randint(0, builder.num_classes, (1, size, size)).astype("int64"))
        build_peak = vm_hwm_mb()
        before = rss_mb()
        reset = reset_hwm()  # the peak from here on is the steps' alone
        times = []
        for _ in range(warmup + steps):
            start = time.perf_counter()
            trainer.run_step(img, label)  # reads every loss back as a float: the step is done
            times.append(time.perf_counter() - start)
    step_peak = vm_hwm_mb()
    peak = max(step_peak, build_peak)
    param_mb = sum(int(np.prod(p.shape)) for p in model.parameters()) * 4 / 2 ** 20
    psa = getattr(model, "psa", None)
    return {"step_s": statistics.median(times[warmup:]), "first_step_s": times[0],
            "warmup": warmup, "steps": steps, "rss_before_mb": before, "peak_rss_mb": peak,
            "step_mem_mb": (step_peak if reset else peak) - before, "param_mb": param_mb,
            "impl": (",".join(psa.custom_ops) or "paddle") if psa is not None else "-"}


def child_main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="one scaling measurement (prints one JSON line)")
    p.add_argument("--child", action="store_true", required=True)
    p.add_argument("--model", required=True, choices=sorted(RECIPES))
    p.add_argument("--impl", default="-", choices=["-", "op", "paddle"])
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--quick", action="store_true", help="ResNet18_vd instead of the recipe's R50")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=TIMED_STEPS)
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    out = measure(a.model, a.impl, a.size, a.quick, a.threads, a.warmup, a.steps)
    print(json.dumps(out), flush=True)
    return 0


# --------------------------------------------------------------------------
# Parent: estimates, children, table
# --------------------------------------------------------------------------

def mem_available_mb() -> Optional[float]:
    """MemAvailable from /proc/meminfo in MiB (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def attention_elements(model: str, cfg_model: Dict[str, Any], size: int) -> int:
    """Elements of the all-pairs attention maps for a ``size x size`` input (0: none).

    Stage 4 is ``ceil(size / output_stride)`` square. DANet's PAM holds one
    ``[HW, HW]`` map; PSANet shrinks the map to ``(h-1)//s + 1`` and holds one
    ``[hw, hw]`` map per direction.
    """
    if model not in ("danet", "psanet"):
        return 0
    h = math.ceil(size / int(cfg_model["backbone"].get("output_stride", 8)))
    if model == "danet":
        return (h * h) ** 2
    h = (h - 1) // int(cfg_model.get("shrink_factor", 2)) + 1
    directions = 2 if cfg_model.get("psa_type", 2) in (2, "bi-direction") else 1
    return directions * (h * h) ** 2


def attention_mb(model: str, impl: str, size: int, quick: bool) -> float:
    """Estimated step memory of the attention maps, MiB (0 for PSPNet and PointRend)."""
    per = ATTN_BYTES_PER_ELEMENT.get((model, impl), 0.0)
    if not per:
        return 0.0
    return per * attention_elements(model, load_recipe(model, quick).dic["model"], size) / 2 ** 20


def estimate(model: str, impl: str, size: int, quick: bool,
             done: Dict[int, Dict[str, Any]]) -> Optional[Dict[str, float]]:
    """Peak RSS (MiB), step memory and step time extrapolated from the measured sizes.

    Step memory minus the attention term is fitted as ``a + b * pixels`` through
    the two largest measured sizes. From one size (or a degenerate fit) ``a`` is
    the size-independent part we know of, the gradient and momentum buffers
    (twice the parameters), and ``b`` takes the rest. Step time scales with
    pixels from the largest size, times 1.5 for the models with an attention
    term (its share grows with pixels^2; the prediction only sets the timeout
    and the budget check, so erring long is the safe side).
    """
    ok = sorted((s, r) for s, r in done.items() if "step_mem_mb" in r)
    if not ok:
        return None
    pts = [(s * s, r["step_mem_mb"] - attention_mb(model, impl, s, quick)) for s, r in ok[-2:]]
    p2, r2 = pts[-1]
    a = min(2 * ok[-1][1].get("param_mb", 0.0), max(r2, 0.0))
    b = max(r2 - a, 0.0) / p2
    if len(pts) == 2:
        p1, r1 = pts[0]
        slope = (r2 - r1) / (p2 - p1)
        if slope > 0 and r2 - slope * p2 >= 0:
            b, a = slope, r2 - slope * p2
    pixels = size * size
    step_mem = a + b * pixels + attention_mb(model, impl, size, quick)
    last_size, last = ok[-1]
    step_s = last["step_s"] * pixels / (last_size * last_size)
    if (model, impl) in ATTN_BYTES_PER_ELEMENT:
        step_s *= 1.5
    steps_run = last.get("warmup", 1) + last.get("steps", 1)
    overhead = max(0.0, last.get("wall_s", 0.0) - last["step_s"] * steps_run)
    return {"peak_mb": last["rss_before_mb"] + step_mem, "step_mem_mb": step_mem,
            "step_s": step_s, "overhead_s": overhead}


def _timed_child(args: List[str], predicted: float, quick: bool, log: Callable[[str], None],
                 msg: str) -> Dict[str, Any]:
    """One child measurement with a timeout scaled to its prediction; adds its wall time."""
    log(msg)
    timeout = 120.0 + 4 * predicted if predicted else (120.0 if quick else 900.0)
    t0 = time.perf_counter()
    res = run_child(args, timeout=timeout)
    res["wall_s"] = time.perf_counter() - t0
    return res


def _gib(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB"


def _label(model: str, impl: str) -> str:
    return model if impl == "-" else f"{model} {impl}"


def run(ctx: Context) -> Section:
    """Measure every (model, impl) series at growing sizes, each in its own child process."""
    sizes = QUICK_SIZES if ctx.quick else FULL_SIZES
    probe = PROBE_SIZE[ctx.quick]
    impl_op = psa_impl_available()  # builds the op here, once, so children only load it
    series = [s for s in PRIORITY if not (s == ("psanet", "op") and impl_op != "op")]
    base_col = f"step vs {sizes[0]}"
    columns = ["model", "impl", "input", "steps", "step s", base_col, "peak RSS MiB",
               "step memory MiB", "est. peak MiB", "note"]
    section = Section("scaling", f"Scaling: train step time and peak memory vs input size "
                      f"({backbone_name(ctx.quick)}, batch 1, CPU)", columns)
    results: Dict[Tuple[str, str], Dict[int, Dict[str, Any]]] = {s: {} for s in series}
    rows: Dict[Tuple[str, str, int], Dict[str, Any]] = {}
    start = time.perf_counter()
    budget = BUDGET_S[ctx.quick]
    workers = QUICK_WORKERS if ctx.quick else 1
    child_threads = max(1, ctx.threads // workers)
    single_steps: List[str] = []
    # Size-major order: every model gets the small sizes before any gets the large
    # ones, so a spent time budget costs only large sizes. Estimates use only the
    # same series' smaller sizes, so one size's children may run side by side.
    for size in sizes + [probe]:
        plans: List[Tuple[Tuple[str, str], List[str], float, str]] = []
        for model, impl in series:
            row: Dict[str, Any] = {"model": model, "impl": impl, "input": f"{size}x{size}"}
            rows[(model, impl, size)] = row
            est = estimate(model, impl, size, ctx.quick, results[(model, impl)])
            avail = mem_available_mb()
            if est is not None:
                row["est. peak MiB"] = est["peak_mb"]
            if est is not None and avail is not None and est["peak_mb"] > FIT_FRACTION * avail:
                row["note"] = (f"does not fit (estimated {_gib(est['peak_mb'])} > "
                               f"{FIT_FRACTION:.0%} of {_gib(avail)} available)")
                continue
            if size == probe:
                row["note"] = ("estimate only: fits" + (f" ({_gib(est['peak_mb'])}, "
                               f"{_gib(avail)} available)" if est and avail else "")
                               + "; not run in this mode")
                continue
            long_step = not ctx.quick and est is not None and est["step_s"] > LONG_STEP_S
            warmup, steps = 1, (1 if long_step or ctx.quick else TIMED_STEPS)
            predicted = (est["overhead_s"] + (warmup + steps) * est["step_s"]) if est else 0.0
            spent = time.perf_counter() - start
            queued = sum(p[2] for p in plans) / workers
            if est is not None and spent + queued + predicted > budget:
                row["note"] = (f"skipped: time budget ({predicted:.0f} s predicted, "
                               f"{max(0.0, budget - spent - queued):.0f} s of {budget:.0f} s left)")
                continue
            if long_step:
                single_steps.append(f"{_label(model, impl)} {size}")
            args = [SCRIPT, "--child", "--model", model, "--impl", impl, "--size", str(size),
                    "--threads", str(child_threads), "--warmup", str(warmup), "--steps", str(steps)]
            if ctx.quick:
                args.append("--quick")
            msg = (f"[scaling] {_label(model, impl)} {size}x{size}: {warmup}+{steps} step(s), est. "
                   f"peak {_gib(est['peak_mb']) if est else '?'}, predicted {predicted:.0f} s")
            plans.append(((model, impl), args, predicted, msg))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [(key, pool.submit(_timed_child, args, predicted, ctx.quick, ctx.log, msg))
                       for key, args, predicted, msg in plans]
            for (model, impl), fut in futures:
                res = fut.result()
                row = rows[(model, impl, size)]
                if "error" in res:
                    why = res["error"]
                    row["note"] = f"error: {why}" + (" (out of memory?)" if "signal 9" in why else "")
                    continue
                results[(model, impl)][size] = res
                row.update({"steps": f"{res['warmup']}+{res['steps']}", "step s": res["step_s"],
                            "peak RSS MiB": res["peak_rss_mb"], "step memory MiB": res["step_mem_mb"]})
                if res.get("impl") != impl:
                    row["note"] = f"ran psa impl {res.get('impl')}"
    for model, impl in SERIES:
        if (model, impl) not in results:
            continue
        base = results[(model, impl)].get(sizes[0], {}).get("step_s")
        for size in sizes + [probe]:
            row = rows[(model, impl, size)]
            if row.get("step s") is not None and base:
                row[base_col] = f"{row['step s'] / base:.2f}x"
            section.rows.append(row)

    section.notes += _notes(ctx, sizes, probe, base_col, workers, child_threads, single_steps,
                            results, impl_op)
    return section


def _notes(ctx: Context, sizes: List[int], probe: int, base_col: str, workers: int,
           child_threads: int, single_steps: List[str],
           results: Dict[Tuple[str, str], Dict[int, Dict[str, Any]]], impl_op: str) -> List[str]:
    def attn(model: str) -> str:
        cfg = load_recipe(model, ctx.quick).dic["model"]
        return ", ".join(f"{s}: {fmt(attention_elements(model, cfg, s) * 4 / 2 ** 20)} MiB"
                         for s in sizes + [probe])

    notes = [
        f"batch 1, random image and labels; {backbone_name(ctx.quick)} recipes "
        f"({', '.join(RECIPES.values())}), random init; one process per row (this file with "
        "--child), so peak RSS is per measurement; "
        + (f"quick mode: {workers} children side by side with {child_threads} thread(s) each, so "
           "the times only show that the code runs" if workers > 1 else
           f"one child at a time, {child_threads} thread(s)"),
        "step = paddleseg_ext.core.train.Trainer.run_step: train-mode forward, compute_losses with "
        "the recipe's losses, backward, SGD momentum step (recipe's weight decay), LR step",
        "steps = warm-up + timed; step s = median of the timed steps"
        + ("; quick mode times one step" if ctx.quick else "")
        + (f"; a step predicted over {LONG_STEP_S:.0f} s is timed once ({', '.join(single_steps)})"
           if single_steps else "")
        + ". Memory always spans the warm-up and at least one more step: the first step's peak "
          "is below the steady state's (gradient buffers stay allocated after clear_grad)"
        + f". {base_col}: against the same series at {sizes[0]}x{sizes[0]} (pixels grow 4x per size)",
        "peak RSS: the child's VmHWM (Python + Paddle + model included; not ru_maxrss, which "
        "Linux carries over from the parent across fork + exec); step memory: the peak during the "
        "steps (VmHWM reset through /proc/self/clear_refs just before them) minus the RSS just "
        "before the first step, i.e. what training adds (activations, gradients, momentum, "
        "workspace); malloc settings are run.py's (freed blocks are recycled, not returned to "
        "the OS)",
        "est. peak: extrapolated before launching from the same series' smaller sizes: a + b * "
        "pixels, plus the all-pairs attention at "
        + ", ".join(f"{_label(m, i)} {v:.0f} B" for (m, i), v in ATTN_BYTES_PER_ELEMENT.items())
        + f" per map element (measured on the modules alone); a size estimated above "
        f"{FIT_FRACTION:.0%} of MemAvailable is not run. {probe}x{probe} is estimated only",
        f"all-pairs attention maps (float32, one copy) per input size: DANet PAM [HW, HW] at "
        f"stride 8: {attn('danet')}; PSANet [hw, hw] per direction, both directions, after "
        f"shrink_factor: {attn('psanet')}. Both grow with pixels^2; a step holds several copies "
        "(softmax output, gradients; PSANet's pure-Paddle path adds an int64 index map per "
        "direction)",
    ]
    pairs = []
    for s in sizes:
        op = results.get(("psanet", "op"), {}).get(s)
        pd = results.get(("psanet", "paddle"), {}).get(s)
        if op and pd:
            pairs.append(f"{s}: {pd['step_mem_mb'] - op['step_mem_mb']:+,.0f} MiB step memory, "
                         f"{pd['step_s'] / op['step_s']:.2f}x step time")
    if pairs:
        notes.append("PSANet pure Paddle vs compiled op: " + "; ".join(pairs))
    if impl_op != "op":
        notes.append("the compiled psa_mask op could not be built here: PSANet rows are pure "
                     "Paddle only")
    return notes


if __name__ == "__main__":
    sys.exit(child_main())
