"""Deployment: Paddle Inference vs dynamic graph vs onnxruntime, images/s per model.

For each model (PSPNet, DANet, PSANet, PointRend; the R50 Cityscapes recipes,
ResNet18_vd in quick mode, random weights) the model is exported once with
the package's own exporters (:func:`paddleseg_ext.core.export.export_onnx`
and, where the ONNX variant differs from the plain model,
:func:`~paddleseg_ext.core.export.export`) and the same input is run by:

* ``dygraph``: eval forward under ``paddle.no_grad`` (the training-time
  model, threads via ``paddle.base.core.set_num_threads``);
* ``paddle-inference``: ``deploy/python/infer.py``'s :class:`Predictor`
  (exactly what users run), oneDNN (MKLDNN) off and on; with oneDNN on it
  deletes ``onednn_placement_pass`` (Paddle 3.3 cannot run the oneDNN
  bilinear_interp that pass places; see infer.py);
* ``dygraph + fold_bn``: the same with its batch norms folded into the convolutions
  (the ``fold_bn`` rewrite of the inference policy, what tools/val.py runs); both dygraph rows
  are :func:`~paddleseg_ext.runtime.prepare`'d for the ``infer`` target (Winograd 3x3
  convolutions where they apply, by default), the plain row with ``fold_bn=False``;
* ``onnxruntime``: ``deploy/python/infer_onnx.py``'s :class:`OnnxPredictor`
  (CPU execution provider);
* ``openvino``: ``deploy/python/infer_openvino.py``'s :class:`OpenVinoPredictor` on the same
  ONNX file, float32 pinned, and (informative: not exact) OpenVINO's own bf16 default, when the
  ``openvino`` package is installed.

Each at ``ctx.threads`` threads (the service and the deploy tools' default on this 2-core machine). Timed is the runtime call alone
(``Predictor.run`` / ``OnnxPredictor.run`` / ``model(x)``), not the image
decode and transforms, which are the same for every runtime. The ratio is
images/s against dygraph at the same thread count, measured in the same run.
A fast wrong runtime is worthless, so every row also reports the largest
absolute logit difference from dygraph and the argmax agreement (exports use
``output_op='none'``, so the runtimes return logits).

Timing: dygraph is timed first, alone (with predictors alive in the process
it did not speed up from 1 to 2 threads); then the runtimes of one thread
count are timed in rounds (each round calls every candidate once, so a burst
of load from elsewhere hits all alike). Each runtime keeps worker threads spinning for a while after a call
(Intel OpenMP's blocktime in Paddle, the ORT thread pool), which would slow
whichever runtime runs next, so every call is preceded by an untimed pause
long enough for those threads to go idle. Thread counts are not mixed within
a round: dygraph's thread setting is process-wide.
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
QUICK_SHAPE = (1, 3, 64, 64)
# Longer than Intel OpenMP's default 200 ms blocktime (KMP_BLOCKTIME) in full
# mode; quick mode only keeps the code path alive.
SETTLE_S = {True: 0.02, False: 0.3}

COLUMNS = ["model", "runtime", "variant", "threads", "ms", "img/s", "vs dygraph",
           "max |diff|", "rel diff", "argmax agree"]


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
    """deploy/python/infer.py and infer_onnx.py, imported as users' scripts are (infer_openvino.py
    likewise, through :func:`_openvino_module`)."""
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


def _openvino_module() -> Any:
    """deploy/python/infer_openvino.py when the ``openvino`` package is installed, else None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return None
    import infer_openvino  # noqa: E402  (deploy/python is on sys.path after _deploy_modules)

    return infer_openvino


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


def _time_rounds(fns: Dict[str, Callable[[], Any]], warmup: int, repeats: int,
                 settle: float) -> Dict[str, float]:
    """Median ms of each callable over rounds that call every candidate once.

    Like :func:`common.interleaved_medians`, plus an untimed pause before each
    call so the previous runtime's spinning worker threads do not steal the cores.
    """
    times: Dict[str, List[float]] = {k: [] for k in fns}
    # One collection up front, none inside the rounds: after tracing a model the
    # heap holds so many objects that gc.collect() takes ~0.15 s, and the runtimes'
    # outputs are plain arrays (no cycles), so the collector has nothing to do here.
    gc.collect()
    gc.disable()
    try:
        for r in range(warmup + repeats):
            for key, fn in fns.items():
                time.sleep(settle)
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                if r >= warmup:
                    times[key].append(elapsed)
    finally:
        gc.enable()
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def run(ctx: Context) -> Section:
    """Export every model, then time and check each runtime at 1 and ``ctx.threads`` threads."""
    import paddle

    import paddleseg_ext.models  # noqa: F401  (registers the models)
    from paddleseg_ext.cvlibs import SegBuilder
    from paddleseg_ext.runtime import policy_from_environment, prepare

    infer, infer_onnx = _deploy_modules()
    infer_openvino = _openvino_module()
    shape = QUICK_SHAPE if ctx.quick else FULL_SHAPE
    threads = [ctx.threads]
    # Full mode: the parity call is the warm-up (one call is enough for every
    # runtime once the predictor exists); quick mode has cheap calls to spare.
    warmup = ctx.warmup if ctx.quick else 0
    repeats = ctx.repeats if ctx.quick else min(ctx.repeats, 3)
    settle = SETTLE_S[ctx.quick]
    impl = psa_impl_available()
    section = Section("deploy", "Deployment runtimes: dygraph vs Paddle Inference vs onnxruntime vs OpenVINO (CPU, "
                      f"{'x'.join(map(str, shape))}, images/s)", COLUMNS)
    x = np.random.RandomState(0).standard_normal(shape).astype("float32")
    onnx_notes: List[str] = []
    autos: List[str] = []
    try:
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
            # What each runtime runs: PSANet's ONNX graph has the pure-Paddle PSA
            # mask, PSPNet's the matmul adaptive pool.
            plain = f"psa {impl}" if name == "psanet" else ""
            onnx_variant = ", ".join(
                "psa paddle" if r.startswith("psa:") else "matmul pool" if r.startswith("onnx_pool:") else r
                for r in dirs["rewrites"])
            pcfg = infer.DeployConfig(dirs["paddle"])
            ocfg = infer.DeployConfig(dirs["onnx"], "onnx") if dirs["onnx"] else None
            xt = paddle.to_tensor(x)

            def dygraph(net: Any = model) -> np.ndarray:
                with paddle.no_grad():
                    return net(xt)[0].numpy()

            for t in threads:
                paddle.base.core.set_num_threads(t)
                ctx.log(f"[deploy] {name}: {t} thread(s) ({time.perf_counter() - t0:.0f} s)")
                # Dygraph first, alone: while predictors exist, dygraph at 2 threads ran at
                # its 1-thread speed (measured: 4198 vs 4190 ms for PSPNet), so it is timed
                # before any predictor of this round is created.
                ref = dygraph()
                ms = _time_rounds({("dygraph", plain): dygraph, ("dygraph + fold_bn", plain): lambda: dygraph(folded)},
                                  warmup, repeats, settle)
                outs = {("dygraph", plain): ref, ("dygraph + fold_bn", plain): dygraph(folded)}
                cands: Dict[Tuple[str, str], Callable[[], np.ndarray]] = {}
                for mkl in (False, True):
                    pred = infer.Predictor(pcfg, "cpu", cpu_threads=t, enable_mkldnn=mkl)
                    cands[("paddle-inference" + (" + mkldnn" if mkl else ""), plain)] = \
                        lambda p=pred: p.run(x)
                if name == "psanet" and impl == "op" and dirs["onnx"]:
                    # The ONNX export's Paddle model: the pure-Paddle PSA mask in Paddle
                    # Inference, to tell the runtime's share from the PSA path's.
                    pred = infer.Predictor(infer.DeployConfig(dirs["onnx"]), "cpu", cpu_threads=t)
                    cands[("paddle-inference", "psa paddle")] = lambda p=pred: p.run(x)
                if ocfg is not None:
                    sess = infer_onnx.OnnxPredictor(ocfg, "cpu", cpu_threads=t)
                    cands[("onnxruntime", onnx_variant)] = lambda s=sess: s.run(x)
                    if infer_openvino is not None:
                        for prec, label in (("fp32", "openvino"), ("bf16", "openvino bf16")):
                            ov = infer_openvino.OpenVinoPredictor(ocfg, "cpu", cpu_threads=t, precision=prec)
                            cands[(label, onnx_variant)] = lambda s=ov: s.run(x)
                # First call of each: the parity check, and the warm-up.
                outs.update({k: fn() for k, fn in cands.items()})
                ms.update(_time_rounds(cands, warmup, repeats, settle))
                base = 1e3 / ms[("dygraph", plain)]
                for (runtime, variant), m in ms.items():
                    section.rows.append({
                        "model": name, "runtime": runtime, "variant": variant or "-", "threads": t,
                        "ms": m, "img/s": 1e3 / m, "vs dygraph": ratio(1e3 / m, base),
                        **_compare(outs[(runtime, variant)], ref),
                    })
                del cands, outs
            if dirs["onnx"]:
                autos.append(_auto_choice(name, dirs["onnx"], threads[-1], shape))
            del model, folded, xt
            gc.collect()
    finally:
        paddle.base.core.set_num_threads(ctx.threads)

    section.notes += [
        f"input 1 image {shape[2]}x{shape[3]} (random, fixed seed), batch 1; threads "
        f"{', '.join(map(str, threads))}; {backbone_name(ctx.quick)} "
        f"recipes ({', '.join(RECIPES[m] for m in MODELS)}), random init"
        + ("" if ctx.quick else "; full mode uses 256x512 instead of the 512x1024 Cityscapes eval crop "
           "(~4x the time per call, ~40 calls per model: the section would take over 30 minutes)"),
        f"timed: the runtime call alone (Predictor.run / OnnxPredictor.run / model(x)), no "
        f"pre/post-processing; median of {repeats} rounds after {warmup} warm-up round(s) and the "
        f"parity call; {settle * 1e3:.0f} ms untimed pause before each call so the previous runtime's "
        "spinning threads go idle; dygraph is timed alone, before the predictors of its thread "
        "count exist (with predictors alive it ran 2 threads at its 1-thread speed)",
        "vs dygraph: images/s over dygraph's at the same thread count (>1x = faster). max |diff|: "
        "largest absolute logit difference from dygraph (on its first call); rel diff: that over "
        "dygraph's largest |logit|; argmax agree: share of pixels with the same class",
        "paddle-inference = deploy/python/infer.py Predictor (switch_ir_optim on); + mkldnn deletes "
        "onednn_placement_pass (Paddle 3.3 cannot run the oneDNN bilinear_interp it places, "
        "Paddle issue #79749), so oneDNN conv/BN/activation fusions run but placement is not "
        "oneDNN-wide. onnxruntime = deploy/python/infer_onnx.py OnnxPredictor, "
        "CPUExecutionProvider (this build has no DnnlExecutionProvider)",
        f"PSANet: dygraph and Paddle Inference use psa_impl={impl}"
        + (" (the compiled psa_mask op, registered from deploy.yaml)" if impl == "op" else
           " (the compiled op could not be built)")
        + "; ONNX uses the pure-Paddle PSA mask (paddle2onnx cannot convert a custom op; "
          "tools/export.py --format onnx does the same)",
        "variant: what the runtime's graph computes where it differs from the training model: "
        "'matmul pool' = PSPNet's AdaptiveAvgPool2D as MatmulAdaptiveAvgPool2D (paddle2onnx "
        "needs it for a dynamic input size); 'psa op'/'psa paddle' = PSANet's PSA mask",
    ]
    section.notes += [
        "openvino = deploy/python/infer_openvino.py OpenVinoPredictor (CPU plugin, reads model.onnx; "
        "INFERENCE_PRECISION_HINT f32); 'openvino bf16' = OpenVINO's default precision on a CPU with "
        "native bf16, shown for its speed, not exact" if infer_openvino is not None else
        "openvino: not installed (pip install openvino), no rows",
        "fastest exact runtime per model (rel diff <= 1e-4 and argmax 100 %): " + fastest_exact(section.rows),
        "fastest exact exported runtime per model (what serve.py can serve): "
        + fastest_exact([r for r in section.rows if not r["runtime"].startswith("dygraph")]),
        "serve.py --runtime auto on each export, run right after its rows (its own probe and timing, "
        f"{threads[-1]} thread(s), deploy/python/serve_runtime.py): " + "; ".join(autos),
    ]
    section.notes += onnx_notes
    return section


def _auto_choice(name: str, export_dir: str, threads: int, shape: Sequence[int]) -> str:
    """``model: runtime (candidate ms, ...)`` as serve.py --runtime auto chooses for an export."""
    infer, _ = _deploy_modules()
    import serve_runtime

    try:
        with _quiet():
            choice = serve_runtime.auto_runtime(infer.DeployConfig(export_dir), threads, side=min(shape[2:]))
    except Exception as e:  # noqa: BLE001 - a failed choice is a result, not a crash
        return f"{name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    figures = ", ".join(f"{c.runtime} {c.ms:.1f} ms" if c.exact else
                        f"{c.runtime} {'failed' if c.error else 'not exact'}" for c in choice.candidates)
    return f"{name}: {choice.runtime} ({figures})"


def fastest_exact(rows: List[Dict[str, Any]], rel_tol: float = 1e-4) -> str:
    """``model: runtime (x.xx x dygraph)`` for the fastest row of each model whose logits are within
    ``rel_tol`` of dygraph's (relative to their largest magnitude) with 100 % argmax agreement."""
    best: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        rel = r.get("rel diff")
        if not isinstance(rel, float) or rel > rel_tol or r.get("argmax agree") != "100.00%":
            continue
        if r["model"] not in best or r["img/s"] > best[r["model"]]["img/s"]:
            best[r["model"]] = r
    return "; ".join(f"{m}: {r['runtime']} ({r['vs dygraph']} dygraph)" for m, r in best.items())
