"""Deployment: dygraph vs the runtimes serve.py can serve, images/s per model.

For each model (PSPNet, DANet, PSANet, PointRend; the R50 Cityscapes recipes,
ResNet18_vd in quick mode, random weights) the model is exported once to ONNX
with the package's own exporter (:func:`paddleseg_ext.core.export.export_onnx`,
``output_op='none'``, so every runtime returns logits) and the same input is run by:

* ``dygraph`` and ``dygraph + fold_bn``: the eval forward under ``paddle.no_grad``,
  :func:`~paddleseg_ext.runtime.prepare`'d for the ``infer`` target (Winograd 3x3
  convolutions where they apply; ``+ fold_bn`` is what tools/val.py runs, the plain
  row has ``fold_bn=False``); the baseline, not servable;
* serve.py's runtimes, exactly as ``serve.py --runtime auto`` builds, checks and
  times them (:func:`serve_runtime.auto_runtime`): Paddle Inference with and without
  oneDNN (the ONNX export's Paddle program), onnxruntime and OpenVINO float32 (the
  ONNX graph), laid out as the service lays them out on ``ctx.threads`` cores
  (:func:`service_layout`: serve.py's default ``--workers`` predictors of the cores
  divided among them), every timed call made by all of them at once, as under load.
  Their images/s is the workers' together, over the same cores as dygraph's.

Every call is timed by :func:`serve_runtime.time_candidates`, the routine
``auto`` uses at the service's start-up: rounds that call every candidate once
in a rotating order, each timed call preceded by a pause (another runtime's
spinning threads go idle) and an untimed call of the same runtime; the median
per candidate. Which exact runtimes are within noise of the fastest is the
same sign test on the paired rounds that ``auto`` applies, and the section
prints, per model, the table's fastest exact runtime next to the runtime a
separate ``serve.py --runtime auto`` start-up picks on the same export.
"""

from __future__ import annotations

import contextlib
import gc
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from common import ROOT, Context, Section, ratio

MODELS = ["pspnet", "danet", "psanet", "pointrend"]
RECIPES = {
    "pspnet": "configs/pspnet/pspnet_resnet50_os8_cityscapes_1024x512_80k.yml",
    "danet": "configs/danet/danet_resnet50_os8_cityscapes_1024x512_80k.yml",
    "psanet": "configs/psanet/psanet_resnet50_os8_cityscapes_1024x512_80k.yml",
    "pointrend": "configs/pointrend/pointrend_resnet50_cityscapes_1024x512_80k.yml",
}
# Full mode: 1x3x512x1024 (the Cityscapes eval crop) took 15-35 s per 2-thread
# dygraph forward on the (shared, loaded) development machine, and each model needs
# ~30 forwards; a quarter of the pixels keeps the section near 10 minutes.
FULL_SHAPE = (1, 3, 256, 512)
# Quick mode: the input serve.py --runtime auto times, 64x64 at its --probe_batch (the batch its
# workers run under load); the batch is filled in from serve.DEFAULT_PROBE_BATCH.
QUICK_SIDE = 64

COLUMNS = ["model", "runtime", "variant", "threads", "ms", "img/s", "vs dygraph",
           "max |diff|", "rel diff", "argmax agree", "exact", "vs fastest"]


# --------------------------------------------------------------------------
# Models from our recipes
# --------------------------------------------------------------------------

def load_recipe(name: str, quick: bool, opts: Sequence[str] = ()) -> Any:
    """The model's R50 Cityscapes recipe as a :class:`Config`, offline.

    ``pretrained`` URLs are dropped (random init is enough for timing; nothing
    may be downloaded). Quick mode swaps in ``ResNet18_vd`` at the recipe's
    output stride (R18 has two stage-4 blocks, so no multi_grid).
    """
    from paddleseg_ext.cvlibs import Config

    cfg = Config(str(ROOT / RECIPES[name]), opts=list(opts))
    model = cfg.dic["model"]
    model.pop("pretrained", None)
    backbone = model["backbone"]
    backbone.pop("pretrained", None)
    if quick:
        model["backbone"] = {"type": "ResNet18_vd", "output_stride": backbone.get("output_stride", 8)}
    return cfg


def psa_impl_available() -> str:
    """``'op'`` when the compiled PSA mask op loads (or builds), else ``'paddle'``."""
    from paddleseg_ext.ops import is_compiled_op_available

    try:
        return "op" if is_compiled_op_available(build=True) else "paddle"
    except Exception:  # noqa: BLE001 - a failed build means the pure-Paddle path
        return "paddle"


def backbone_name(quick: bool) -> str:
    return "ResNet18_vd" if quick else "ResNet50_vd"


# --------------------------------------------------------------------------
# Runtimes
# --------------------------------------------------------------------------

def _deploy_modules() -> Tuple[Any, Any]:
    """deploy/python/infer.py and infer_onnx.py, imported as users' scripts are (and deploy/python on
    ``sys.path`` for serve.py and serve_runtime.py)."""
    path = str(ROOT / "deploy" / "python")
    if path not in sys.path:
        sys.path.insert(0, path)
    import infer  # noqa: E402
    import infer_onnx  # noqa: E402

    return infer, infer_onnx


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the exporters' and paddle2onnx's chatter on stdout (run.py prints Markdown there)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _export(name: str, model: Any, cfg: Any, workdir: Path, policy: Any) -> Dict[str, Any]:
    """Export once: ONNX (with its Paddle model), plus a plain Paddle model when they differ.

    Returns ``{"paddle": dir, "onnx": dir or None, "onnx_note": str, "rewrites": [...]}``.
    """
    from paddleseg_ext.core.export import export, export_onnx

    transforms = (cfg.dic.get("val_dataset") or {}).get("transforms", [])
    out: Dict[str, Any] = {"paddle": None, "onnx": None, "onnx_note": "", "rewrites": []}
    onnx_dir = workdir / f"{name}_onnx"
    try:
        with _quiet():
            deploy = export_onnx(model, str(onnx_dir), transforms, output_op="none", policy=policy)
        out["onnx"] = str(onnx_dir)
        out["rewrites"] = list(deploy["Deploy"]["onnx"].get("rewrites") or [])
        out["onnx_note"] = f"opset {deploy['Deploy']['onnx']['opset']}"
    except Exception as e:  # noqa: BLE001 - an unconvertible model is a result, not a crash
        out["onnx_note"] = f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if out["onnx"] is not None and not out["rewrites"]:
        out["paddle"] = out["onnx"]  # the ONNX export's Paddle model is the plain model
    else:
        paddle_dir = workdir / f"{name}_paddle"
        with _quiet():
            export(model, str(paddle_dir), transforms, output_op="none", policy=policy)
        out["paddle"] = str(paddle_dir)
    return out


def _compare(got: np.ndarray, ref: np.ndarray) -> Dict[str, Any]:
    """Parity cells of one runtime's logits against dygraph's."""
    if got.shape != ref.shape:
        return {"max |diff|": f"shape {list(got.shape)} != {list(ref.shape)}"}
    diff = float(np.abs(got - ref).max())
    # Random-init R50 logits reach the hundreds, so the absolute diff alone misleads.
    scale = float(np.abs(ref).max()) or 1.0
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    return {"max |diff|": diff, "rel diff": diff / scale, "argmax agree": f"{100 * agree:.2f}%"}


#: Table names of serve.py's runtimes.
RUNTIME_LABELS = {"onnx": "onnxruntime", "openvino": "openvino", "paddle": "paddle-inference",
                  "paddle-mkldnn": "paddle-inference + mkldnn"}


def service_layout(threads: int) -> Tuple[int, int]:
    """``(workers, threads per predictor)`` of serve.py with its default ``--workers`` on ``threads``
    cores (``--cpu_threads 0``: the cores divided among the workers), at most one worker per core."""
    import serve

    workers = max(1, min(serve.DEFAULT_WORKERS, threads))
    return workers, max(1, threads // workers)


def run(ctx: Context) -> Section:
    """Export every model, then time and check dygraph and each of serve.py's runtimes at ``ctx.threads``."""
    import paddle

    import paddleseg_ext.models  # noqa: F401  (registers the models)
    from paddleseg_ext.cvlibs import SegBuilder
    from paddleseg_ext.runtime import policy_from_environment, prepare

    infer, _ = _deploy_modules()
    import serve
    import serve_runtime

    shape = (serve.DEFAULT_PROBE_BATCH, 3, QUICK_SIDE, QUICK_SIDE) if ctx.quick else FULL_SHAPE
    t = ctx.threads
    workers, per = service_layout(t)
    # Quick mode: the rounds serve.py --runtime auto times (its probe is this size), so the two measure
    # alike; full mode: calls take seconds, and auto never probes this size.
    repeats = serve_runtime.PROBE_ROUNDS if ctx.quick else min(ctx.repeats, 3)
    impl = psa_impl_available()
    section = Section("deploy", "Deployment runtimes: dygraph vs serve.py's runtimes (Paddle Inference, onnxruntime, "
                      f"OpenVINO; CPU, {'x'.join(map(str, shape))}, images/s)", COLUMNS)
    x = np.random.RandomState(0).standard_normal(shape).astype("float32")
    onnx_notes: List[str] = []
    picks: List[str] = []
    autos: List[str] = []
    try:
        paddle.base.core.set_num_threads(t)
        for name in MODELS:
            ctx.log(f"[deploy] {name}: build + export")
            paddle.seed(0)
            opts = [f"model.psa_impl={impl}"] if name == "psanet" else []
            cfg = load_recipe(name, ctx.quick, opts)
            builder = SegBuilder(cfg)
            model = builder.model
            model.eval()
            policy = policy_from_environment(target="infer", **builder.policy_overrides)
            t0 = time.perf_counter()
            dirs = _export(name, model, cfg, ctx.workdir, policy)
            # Dygraph as tools/val.py runs it (its policy's rewrites, BN folded), and the same without
            # folding, to show what folding alone gives.
            folded = prepare(model, policy)
            model = prepare(model, policy.replace(fold_bn=False))
            onnx_notes.append(f"{name}: exported in {time.perf_counter() - t0:.0f} s; ONNX "
                              f"{dirs['onnx_note']}"
                              + (f" ({'; '.join(dirs['rewrites'])})" if dirs["rewrites"] else ""))
            plain = f"psa {impl}" if name == "psanet" else ""
            # What the served runtimes run: the ONNX export (its graph, and its Paddle program for
            # Paddle Inference): PSANet's pure-Paddle PSA mask, PSPNet's matmul adaptive pool.
            onnx_variant = ", ".join(
                "psa paddle" if r.startswith("psa:") else "matmul pool" if r.startswith("onnx_pool:") else r
                for r in dirs["rewrites"])
            xt = paddle.to_tensor(x)

            def dygraph(net: Any) -> Callable[[Any], np.ndarray]:
                def call(_: Any) -> np.ndarray:
                    with paddle.no_grad():
                        return net(xt)[0].numpy()
                return call

            ctx.log(f"[deploy] {name}: {t} thread(s) ({time.perf_counter() - t0:.0f} s)")
            # Dygraph first, alone: while predictors exist, dygraph at 2 threads ran at its 1-thread
            # speed (measured: 4198 vs 4190 ms for PSPNet), so it is timed before any predictor exists.
            dy = {"dygraph": dygraph(model), "dygraph + fold_bn": dygraph(folded)}
            ref = dy["dygraph"](None)
            dy_ms = {k: statistics.median(v) for k, v in serve_runtime.time_candidates(dy, None, repeats).items()}
            base = 1e3 * shape[0] / dy_ms["dygraph"]
            for runtime, m in dy_ms.items():
                ips = 1e3 * shape[0] / m
                section.rows.append({"model": name, "runtime": runtime, "variant": plain or "-", "threads": t,
                                     "ms": m, "img/s": ips, "vs dygraph": ratio(ips, base),
                                     **_compare(dy[runtime](None), ref), "exact": "-", "vs fastest": "-"})
            if not dirs["onnx"]:
                onnx_notes.append(f"{name}: no ONNX export, so no serve.py runtime but Paddle Inference "
                                  "(nothing to choose from)")
                del model, folded, dy
                gc.collect()
                continue
            # serve.py's runtimes, exactly as --runtime auto builds, checks and times them.
            outs: Dict[str, np.ndarray] = {}
            dcfg = infer.DeployConfig(dirs["onnx"])
            with _quiet():
                choice = serve_runtime.auto_runtime(dcfg, per, side=min(shape[2:]), batch=shape[0], runs=repeats,
                                                    outputs=outs, workers=workers)
            for c in choice.candidates:
                row = {"model": name, "runtime": RUNTIME_LABELS.get(c.runtime, c.runtime),
                       "variant": onnx_variant or "-", "threads": f"{workers}x{per}"}
                if c.error:
                    section.rows.append({**row, "exact": f"failed: {c.error.splitlines()[0][:120]}"})
                    continue
                row.update(_compare(outs[c.runtime], ref))
                row["exact"] = "yes" if c.exact else f"no (max |diff| {c.max_abs_diff:.3g} > {c.bound:.3g})"
                if c.ms is not None:
                    ips = 1e3 * workers * shape[0] / c.ms  # the workers' images together
                    row.update({"ms": c.ms, "img/s": ips, "vs dygraph": ratio(ips, base),
                                "vs fastest": _vs_fastest(c, choice)})
                section.rows.append(row)
            picks.append(f"{name}: {_tied(choice)}; auto serves {RUNTIME_LABELS[choice.runtime]}")
            # And the service's own start-up choice on the same export: an independent measurement.
            autos.append(_auto_choice(name, dirs["onnx"], per, workers, shape, choice))
            del model, folded, dy, outs
            gc.collect()
    finally:
        paddle.base.core.set_num_threads(ctx.threads)

    section.notes += [
        f"input {shape[0]} image(s) {shape[2]}x{shape[3]} per call (random, fixed seed"
        + ("; serve.py --runtime auto's probe: its default --probe_batch, the batch its workers run under load"
           if ctx.quick else "") + f"); {t} thread(s) for dygraph, the same "
        f"cores for the served runtimes ({workers} x {per}); "
        f"{backbone_name(ctx.quick)} recipes ({', '.join(RECIPES[m] for m in MODELS)}), random init"
        + ("" if ctx.quick else "; full mode uses 256x512 instead of the 512x1024 Cityscapes eval crop "
           "(~4x the time per call, ~40 calls per model: the section would take over 30 minutes)"),
        "the exported rows are serve.py --runtime auto's candidates, built, checked and timed by its own code "
        "(deploy/python/serve_runtime.auto_runtime on the ONNX export): the predictors the service builds on "
        f"{t} core(s), {workers} worker(s) x {per} thread(s) (serve.py's default --workers, the cores divided "
        "among them; threads column), each timed call made by every worker at once on the same input, as under "
        "load, and the service's post-processing of its output (what a request costs a worker); ms = one such "
        "call, img/s = the workers' images together per second; "
        f"timed by serve_runtime.time_candidates: {repeats} rounds, order rotated each round, each call "
        f"after a {serve_runtime.SETTLE_S * 1e3:.0f} ms pause (no other runtime's threads spinning) and one "
        "untimed call of the same runtime (as after the service's previous request); median. Dygraph (not "
        "servable) is timed by the same routine, before any predictor exists (with predictors alive it ran 2 "
        "threads at its 1-thread speed); its calls exclude post-processing",
        "exact: serve.py's check (logits within the float32 rounding bound of onnxruntime's unoptimised graph "
        "and the same class wherever the margin exceeds twice that). vs fastest: against the fastest exact "
        "exported runtime; 'within noise' = not slower in more paired rounds than chance allows (one-sided "
        f"sign test at {serve_runtime.NOISE_ALPHA}), so no order is claimed between those",
        "vs dygraph: images/s over dygraph's (>1x = faster). max |diff|: largest absolute logit difference from "
        "dygraph; rel diff: that over dygraph's largest |logit|; argmax agree: share of pixels with the same "
        "class (Paddle Inference returns the export's output: logits here, output_op none)",
        "paddle-inference = deploy/python/infer.py Predictor on the ONNX export's Paddle program (what serve.py "
        "runs for --runtime paddle); + mkldnn deletes onednn_placement_pass (Paddle 3.3 cannot run the oneDNN "
        "bilinear_interp it places, Paddle issue #79749). onnxruntime = infer_onnx.py OnnxPredictor "
        "(CPUExecutionProvider, intra-op threads as given, inter-op 1); openvino = infer_openvino.py "
        "OpenVinoPredictor (float32 pinned, LATENCY hint, threads not pinned to cores when a predictor has "
        "fewer threads than the machine has cores)",
        "variant: what the served graph computes where it differs from the training model: 'matmul pool' = "
        "PSPNet's AdaptiveAvgPool2D as MatmulAdaptiveAvgPool2D (paddle2onnx needs it for a dynamic input "
        "size); 'psa paddle' = PSANet's pure-Paddle PSA mask (paddle2onnx cannot convert a custom op); "
        f"dygraph runs psa_impl={impl}",
        "fastest exact exported runtime per model (within noise: the runtimes no order is claimed between): "
        + "; ".join(picks),
        f"serve.py --runtime auto started on each export right after its rows (pick_runtime, its own "
        f"measurement, {workers} worker(s) x {per} thread(s), same probe): " + "; ".join(autos),
    ]
    section.notes += onnx_notes
    return section


def _vs_fastest(c: Any, choice: Any) -> str:
    """``fastest``, ``within noise`` or ``1.23x slower`` against the fastest exact candidate."""
    fastest = min((o for o in choice.candidates if o.exact and o.ms is not None), key=lambda o: o.ms)
    if not c.exact:
        return "not exact"
    if c is fastest:
        return "fastest"
    return "within noise" if c.within_noise else f"{c.ms / fastest.ms:.2f}x slower"


def _tied(choice: Any) -> str:
    """``a`` or ``a (within noise: b, c)``: the fastest exact runtime and those tied with it."""
    exact = sorted((c for c in choice.candidates if c.exact and c.ms is not None), key=lambda c: c.ms)
    tied = [RUNTIME_LABELS.get(c.runtime, c.runtime) for c in exact[1:] if c.within_noise]
    return RUNTIME_LABELS.get(exact[0].runtime, exact[0].runtime) + (f" (within noise: {', '.join(tied)})"
                                                                     if tied else "")


def _auto_choice(name: str, export_dir: str, threads: int, workers: int, shape: Sequence[int],
                 table: Any) -> str:
    """``model: runtime (candidate ms, ...)`` as serve.py --runtime auto chooses for an export, and
    whether that is the table's fastest exact runtime or one tied with it."""
    infer, _ = _deploy_modules()
    import serve

    try:
        with _quiet():
            choice = serve.pick_runtime(infer.DeployConfig(export_dir), "auto", threads, min(shape[2:]),
                                        workers=workers, batch=shape[0])
    except Exception as e:  # noqa: BLE001 - a failed choice is a result, not a crash
        return f"{name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    figures = ", ".join(f"{c.runtime} {c.ms:.1f} ms" if c.exact else
                        f"{c.runtime} {'failed' if c.error else 'not exact'}" for c in choice.candidates)
    fastest = min((c for c in table.candidates if c.exact and c.ms is not None), key=lambda c: c.ms)
    tied = {c.runtime for c in table.candidates if c.within_noise}
    verdict = ("= the table's fastest exact" if choice.runtime == fastest.runtime else
               "within noise of the table's fastest exact" if choice.runtime in tied else
               f"NOT the table's fastest exact ({fastest.runtime}) nor tied with it")
    return f"{name}: {choice.runtime} ({figures}), {verdict}"
