"""The benchmark suite: one entry point, one JSON file and one Markdown table per run.

Sections (each a module of this folder with ``run(ctx) -> Section``):

* ``mkl``: Paddle's MKL on this CPU, plain vs after ``import paddleseg_ext``;
* ``psa_op``: the PSA mask op vs pure Paddle vs the memory-copy floor;
* ``psa_attention``: the fused PSA attention op vs the unfused composition;
* ``models``: eval forward and one training step, ours vs PaddleSeg 2.8;
* ``data``: decode + Cityscapes train transforms, ours vs PaddleSeg's;
* ``deploy``: Paddle Inference (MKLDNN on/off, 1/2 threads) vs dygraph vs onnxruntime;
* ``scaling``: train-step time and peak memory against input size.

Every ratio is against a baseline measured in the same run. The PaddleSeg rows
need the benchmark environment (``bash benchmarks/setup_bench_env.sh``, then
``.venv-bench/bin/python benchmarks/run.py``); elsewhere they are reported as
skipped with the reason.

Usage::

    python benchmarks/run.py [--quick] [--sections psa_op,models] [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BENCH_DIR, Context, Section, machine_info, set_threads  # noqa: E402

MODELS = ("PSPNet", "DANet", "PSANet", "PointRend")
# Run (and table) order. scaling runs early, while this process is still small:
# its children's memory limit is what the machine has available next to it.
SECTIONS = ["mkl", "psa_op", "psa_attention", "scaling", "models", "data", "deploy"]
MODULES = {"mkl": "mkl", "psa_op": "psa_op", "psa_attention": "psa_attention",
           "models": "models_vs_peer", "data": "data_pipeline", "deploy": "deployment",
           "scaling": "scaling"}

# glibc returns freed multi-MB blocks to the OS and page-faults them back on the
# next allocation; which candidate pays depends on the order of frees. Raising
# the thresholds makes freed blocks recycle, as a caching allocator would, for
# every candidate alike. glibc reads these at process start only.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes, ResNet18 and few repeats (keeps the scripts from rotting)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    parser.add_argument("--models", default="PSPNet,DANet,PSANet,PointRend",
                        help="architectures for the sections with per-model rows")
    parser.add_argument("--passes", default="eval,train,shipped",
                        help="models section: comma-separated subset of eval, train, shipped "
                             "(shipped = each toolkit in its own process)")
    parser.add_argument("--out", default=str(BENCH_DIR / "results"),
                        help="directory for <date>.json and <date>.md")
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's malloc defaults (see MALLOC_ENV)")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    args.sections = wanted
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        parser.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    args.passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    if not args.passes or any(p not in ("eval", "train", "shipped") for p in args.passes):
        parser.error(f"--passes must be a subset of eval,train,shipped, got {args.passes}")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def results_path(args: argparse.Namespace) -> Path:
    """``<out>/<date>[-quick].json``: sections run on different calls the same day accumulate in it."""
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{dt.datetime.now().strftime('%Y-%m-%d')}{'-quick' if args.quick else ''}.json"


def section_entry(section: Section, args: argparse.Namespace) -> dict:
    """One section's record in the results file."""
    return {"title": section.title, "columns": section.columns, "rows": section.rows, "notes": section.notes,
            "quick": args.quick, "threads": args.threads,
            "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def write_report(record: dict, json_path: Path, failed: Sequence[str]) -> int:
    """Write the record and its Markdown, print the Markdown; the exit status (1 if a section failed)."""
    json_path.write_text(json.dumps(record, indent=1))
    md = render(record)
    json_path.with_suffix(".md").write_text(md)
    print(md)
    print(f"results: {json_path}")
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if not args.default_malloc and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        cmd = [sys.executable, str(Path(__file__).resolve()),
               *(sys.argv[1:] if argv is None else argv)]
        return subprocess.call(cmd, env=dict(os.environ, **MALLOC_ENV))
    if len(args.sections) > 1:
        return run_apart(args, argv)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    # Importing the package selects MKL's code path before its first call, as in
    # every paddleseg_ext process (section "mkl" measures what that changes);
    # PaddleSeg in this process gets the same MKL path.
    import paddleseg_ext  # noqa: F401

    set_threads(args.threads)

    warmup, repeats = (1, 3) if args.quick else (2, 5)
    if args.repeats:
        repeats = args.repeats
    json_path = results_path(args)
    record = json.loads(json_path.read_text()) if json_path.exists() else {"sections": {}}
    record["machine"] = machine_info(args.threads)
    record["date"] = json_path.stem[:10]
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        ctx = Context(quick=args.quick, threads=args.threads, warmup=warmup, repeats=repeats,
                      workdir=Path(tmp), models=args.models, passes=args.passes)
        for key in args.sections:
            ctx.log(f"[bench] {key} ...")
            start = time.perf_counter()
            try:
                module = importlib.import_module(MODULES[key])
                section: Section = module.run(ctx)
            except Exception as e:  # one broken section must not hide the others
                traceback.print_exc()
                failed.append(key)
                section = Section(key, key, ["error"], [{"error": f"{type(e).__name__}: {e}"}])
            elapsed = time.perf_counter() - start
            section.notes.append(f"section wall time {elapsed:.0f} s")
            record["sections"][key] = section_entry(section, args)
            ctx.log(f"[bench] {key} done in {elapsed:.0f} s")
            json_path.write_text(json.dumps(record, indent=1))
    return write_report(record, json_path, failed)


def run_apart(args: argparse.Namespace, argv: Optional[List[str]]) -> int:
    """Each section in a process of its own, one after the other, into the same results file.

    A section inherits nothing from the ones before it: no threads or pools left by another
    runtime, no heap they shaped. (In one process, the deploy section crashed in paddle2onnx after
    the models and data sections, with serve.py's two workers timed at once; alone it did not.) A
    section whose process dies is reported as failed, and the others still run.
    """
    given = list(sys.argv[1:] if argv is None else argv)
    rest: List[str] = []
    skip = False
    for a in given:  # the command line without --sections
        if skip:
            skip = False
            continue
        if a == "--sections":
            skip = True
            continue
        if not a.startswith("--sections="):
            rest.append(a)
    json_path = results_path(args)

    def load() -> dict:
        return (json.loads(json_path.read_text()) if json_path.exists()
                else {"sections": {}, "date": json_path.stem[:10]})

    failed = {}
    for key in args.sections:
        record = load()  # an earlier result of this section today must not stand in for this run's
        record["sections"].pop(key, None)
        json_path.write_text(json.dumps(record, indent=1))
        cmd = [sys.executable, str(Path(__file__).resolve()), *rest, "--sections", key]
        rc = subprocess.call(cmd, stdout=subprocess.DEVNULL)
        if rc != 0:
            failed[key] = rc
            print(f"[bench] {key}: its process exited with status {rc}", file=sys.stderr, flush=True)
    record = load()
    for key, rc in failed.items():
        if key not in record["sections"]:  # the process died before writing the section
            error = Section(key, key, ["error"], [{"error": f"the section's process exited with status {rc}"}])
            record["sections"][key] = section_entry(error, args)
    if "machine" not in record:
        record["machine"] = machine_info(args.threads)
    return write_report(record, json_path, list(failed))


def render(record: dict) -> str:
    """The Markdown report of one results record."""
    m = record["machine"]
    lines = [
        f"## Benchmarks {record['date']}", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB; Python {m['python']}, "
        f"Paddle {m['paddle']} (CPU), NumPy {m['numpy']}, PaddleSeg {m.get('paddleseg') or 'not installed'}; "
        f"threads {m['threads']}; MKL_DEBUG_CPU_TYPE={m.get('MKL_DEBUG_CPU_TYPE')} "
        "(see the mkl section).", "",
    ]
    for key in SECTIONS:
        sec = record["sections"].get(key)
        if sec is None:
            continue
        section = Section(key, sec["title"], sec["columns"], sec["rows"], list(sec["notes"]))
        section.notes.append(f"measured {sec['measured_at']}, threads {sec['threads']}"
                             f"{', quick mode' if sec['quick'] else ''}, load average after "
                             f"{sec['load_average_after']}")
        lines.append(section.to_markdown())
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
