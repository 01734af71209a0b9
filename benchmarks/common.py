"""Shared pieces of the benchmark suite: context, timing, memory, tables.

Every section module exposes ``run(ctx: Context) -> Section``. A section is a
titled table (``columns`` + ``rows`` of plain values) plus notes; ``run.py``
stores it as JSON and renders it as Markdown. Ratios are always against a
baseline measured in the same run: absolute times on a shared machine are not
comparable between runs.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass
class Context:
    """What every section needs to know about this run.

    Attributes:
        quick: tiny shapes and few repeats (the smoke test's mode).
        threads: CPU threads given to Paddle (and to the op, OpenCV).
        warmup: untimed calls before timing.
        repeats: timed calls; the median is reported.
        workdir: scratch directory for exported models and images.
        models: architectures to run (``PSPNet``, ``DANet``, ``PSANet``,
            ``PointRend``); sections with per-model rows skip the others.
        passes: what the models section times: ``eval``, ``train``, ``shipped``
            (the own-process rows).
        log: progress printer (stderr).
    """

    quick: bool
    threads: int
    warmup: int
    repeats: int
    workdir: Path
    models: Sequence[str] = ("PSPNet", "DANet", "PSANet", "PointRend")
    passes: Sequence[str] = ("eval", "train", "shipped")
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Section:
    """One table of results.

    Attributes:
        key: short name (``psa_op``, ``models`` ...), also the JSON key.
        title: Markdown heading.
        columns: column names, in order.
        rows: one dict per row, keyed by column.
        notes: sentences printed under the table (setup, shapes, skips).
    """

    key: str
    title: str
    columns: List[str]
    rows: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(fmt(row.get(c)) for c in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines) + "\n"


def fmt(value: Any) -> str:
    """A table cell: floats to 3 significant figures, ratios keep their 'x'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"
    return str(value)


def ratio(num: Optional[float], den: Optional[float]) -> Optional[str]:
    """``num / den`` as ``'0.87x'``, or None when either side is missing."""
    if num is None or den is None or den <= 0:
        return None
    return f"{num / den:.2f}x"


def interleaved_medians(fns: Dict[str, Callable[[], Any]], warmup: int, repeats: int,
                        sync: Optional[Callable[[Any], Any]] = None) -> Dict[str, float]:
    """Median wall time in milliseconds of each callable.

    Rounds call every candidate once in turn, so a burst of load from other
    processes hits all of them alike instead of skewing one.

    Args:
        fns: name -> zero-argument callable.
        warmup: untimed rounds.
        repeats: timed rounds.
        sync: called on each result inside the timed region (e.g. to force a
            lazy value); None to time the call alone.
    """
    for _ in range(warmup):
        for fn in fns.values():
            out = fn()
            if sync is not None:
                sync(out)
            del out
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            out = fn()
            if sync is not None:
                sync(out)
            times[name].append(time.perf_counter() - start)
            del out
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def backward_step(forward: Callable[[], Any]) -> Callable[[], None]:
    """A timed training step of one layer: ``forward()``, then backward of a constant gradient."""
    def step() -> None:
        import paddle

        y = forward()
        y.backward(paddle.full_like(y, 1e-3))
    return step


def eval_and_train_medians(fns: Dict[str, Callable[[], Any]], repeats: int
                           ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Interleaved medians (ms) of each layer forward under no_grad, then of its
    :func:`backward_step`: the eval and train columns of the one-layer A/B scripts."""
    import paddle

    with paddle.no_grad():
        ev = interleaved_medians(fns, 1, repeats)
    tr = interleaved_medians({k: backward_step(f) for k, f in fns.items()}, 1, repeats)
    return ev, tr


def layer_script_main(argv: Optional[Sequence[str]], doc: str,
                      run: Callable[[Sequence[tuple], int], List[str]],
                      cases: Sequence[tuple], quick: Sequence[tuple]) -> int:
    """Command line of the one-layer A/B scripts (``winograd.py``, ``conv_layout.py``)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (keeps the script from rotting)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    print(f"threads {args.threads}, median of {repeats} interleaved rounds")
    run(quick if args.quick else cases, repeats)
    return 0


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def set_threads(threads: int) -> None:
    """Threads for Paddle, OpenCV and the PSA op; call before heavy work."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["PADDLESEG_EXT_OP_THREADS"] = str(threads)
    import paddle

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - opencv is a requirement
        pass


def machine_info(threads: int) -> Dict[str, Any]:
    """Machine, library versions and thread count, stored with every result."""
    import numpy
    import paddle

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError):  # pragma: no cover
        mem_gb = None
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "threads": threads,
        "python": platform.python_version(),
        "paddle": paddle.__version__,
        "paddle_commit": getattr(paddle.version, "commit", "?"),
        "numpy": numpy.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE"),
    }
    try:
        import paddleseg

        info["paddleseg"] = paddleseg.__version__
    except Exception:
        info["paddleseg"] = None
    return info


def plain_paddle_env() -> Dict[str, str]:
    """The environment of a Paddle process that never imported ``paddleseg_ext``:
    without the MKL variable it may have set, and opted out in case the child
    imports it after all (what PaddleSeg's own tools run in)."""
    from paddleseg_ext.utils import mkl_dispatch

    return dict(mkl_dispatch.plain_environment(), **{mkl_dispatch.OPT_OUT: "0"})


def run_child(args: Sequence[str], timeout: float, env: Optional[Dict[str, str]] = None,
              base_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run ``python <args>`` in a fresh process that prints one JSON line last.

    Used where a measurement needs its own process (peak memory, a crash that
    must not take the whole suite down, an environment read once at start).
    ``env`` is laid over ``base_env`` (default: this process's environment).
    Returns the decoded JSON, or
    ``{"error": ...}`` naming the exit status and the last stderr line.
    """
    cmd = [sys.executable, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ if base_env is None else base_env, **(env or {})),
                              cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    why = tail[-1][:300] if tail else "no output"
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode} ({why})"
    return {"error": f"exit {proc.returncode}: {why}"}


def recipe_model(config: Path) -> Any:
    """The network a recipe builds, in eval mode (the checkpoint proofs load a peer's file into it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from paddleseg_ext.cvlibs import Config, SegBuilder

    model = SegBuilder(Config(str(config))).model
    model.eval()
    return model


def eval_logits(model: Any, x: Any) -> Any:
    """The model's main eval logits for the NCHW array ``x``, in ``x``'s dtype (the model is cast to it)."""
    import paddle

    model.to(dtype=str(x.dtype))
    with paddle.no_grad():
        return model(paddle.to_tensor(x))[0].numpy()
