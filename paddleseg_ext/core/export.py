"""Export to a static Paddle Inference model plus ``deploy.yaml``, and to ONNX.

* :func:`export` prepares a copy of the model for the ``export`` target
  (:func:`paddleseg_ext.runtime.prepare`), traces it with ``paddle.jit.to_static``
  (default input ``[None, C, None, None]``: batch and spatial size dynamic)
  and writes ``model.json`` (PIR) + ``model.pdiparams`` + ``deploy.yaml``.
  Compiled custom ops the program calls (PSANet's ``psa_mask`` with
  ``psa_impl: op``) are listed in deploy.yaml, and their shared library is
  copied next to the model (``custom_ops/``) so a deployment can register it.
* :func:`export_onnx` does the same for the ``onnx`` target (forms paddle2onnx
  converts: pure-Paddle PSA mask, matmul adaptive pooling), then converts the saved Paddle model
  with paddle2onnx (in a child process: paddle2onnx aborts the process on
  an op it cannot convert) into ``model.onnx`` and records it in deploy.yaml.
  Needs the optional dependencies: ``pip install -e .[onnx]``.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

import paddle
import yaml

from ..cvlibs.errors import DeploymentError, MissingDependencyError  # noqa: F401 - raised and re-exported here
from ..runtime import ExecutionPolicy, current_policy, prepare
from ..runtime.policy import child_environment
from ..utils.logger import get_logger
from ..utils.quiet import filter_native_stderr

OUTPUT_OPS = ("argmax", "softmax", "none")
ONNX_INSTALL_HINT = "pip install -e .[onnx]   (or: pip install paddle2onnx onnxruntime)"
DEFAULT_OPSET = 11


class ExportWrapper(paddle.nn.Layer):
    """Eval-mode model + output op: ``[N, C, H, W] -> [N, H, W]`` int32 (argmax) or probabilities."""

    def __init__(self, model: paddle.nn.Layer, output_op: str = "argmax") -> None:
        super().__init__()
        if output_op not in OUTPUT_OPS:
            raise ValueError(f"output_op must be one of {', '.join(OUTPUT_OPS)}, got {output_op!r}")
        self.model, self.output_op = model, output_op

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        logit = self.model(x)[0]
        if self.output_op == "argmax":
            return paddle.argmax(logit, axis=1, dtype="int32")
        if self.output_op == "softmax":
            return paddle.nn.functional.softmax(logit, axis=1)
        return logit


def custom_ops_of(model: paddle.nn.Layer) -> List[str]:
    """Compiled custom ops the model's forward calls: layers declare them in a
    ``custom_ops`` attribute (a tuple of op names)."""
    needed = set()
    for layer in model.sublayers(include_self=True):
        needed.update(getattr(layer, "custom_ops", ()))
    return sorted(needed)


def _custom_op_library(name: str) -> Optional[str]:
    """Path of the loaded shared library of a custom op we provide, or None."""
    from ..ops.custom_op_build import registered_op

    op = registered_op(name)
    if op is None:
        return None
    try:
        return op.load_library(build=False)[1]
    except Exception:  # noqa: BLE001 - shipping the library is a convenience only
        return None


def _normalise_shape(input_shape: Optional[Sequence[int]], img_channels: int) -> List[Optional[int]]:
    """``[N, C, H, W]`` with None for dynamic sizes; C is the band count."""
    shape = list(input_shape) if input_shape else [None, img_channels, None, None]
    if len(shape) != 4:
        raise ValueError(f"input_shape must be N C H W, got {shape}")
    shape = [None if (s is None or int(s) < 0) else int(s) for s in shape]
    if shape[1] is None:
        shape[1] = img_channels  # the channel count is never dynamic: deploy reads it
    elif shape[1] != img_channels:
        raise ValueError(f"input_shape {list(input_shape)} has {shape[1]} channels but the model takes "
                         f"img_channels={img_channels} (from the dataset); give C={img_channels} or -1")
    return shape


def _normalisation(transforms_cfg: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The per-band normalisation of the val transforms with Normalize's defaults written
    out (``{mean, std, max_value}``), so deploy.yaml states it in full; None without Normalize."""
    from ..transforms import Normalize

    for t in transforms_cfg:
        if isinstance(t, dict) and t.get("type") == "Normalize":
            built = Normalize(**{k: v for k, v in t.items() if k != "type"})
            return {"mean": built.mean, "std": built.std, "max_value": built.max_value}
    return None


def _write_deploy(save_dir: str, deploy: Dict[str, Any]) -> None:
    tmp = os.path.join(save_dir, "deploy.yaml.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(deploy, f, sort_keys=False)
    os.replace(tmp, os.path.join(save_dir, "deploy.yaml"))


def export(model: paddle.nn.Layer, save_dir: str, val_transforms_cfg: Sequence[Dict[str, Any]],
           input_shape: Optional[Sequence[int]] = None, output_op: str = "argmax",
           img_channels: int = 3, extra: Optional[Dict[str, Any]] = None,
           policy: Optional[ExecutionPolicy] = None) -> Dict[str, Any]:
    """Trace ``model`` with ``paddle.jit.to_static`` and save it with ``deploy.yaml``.

    Args:
        model: weights loaded (not modified: a copy is prepared for the ``export`` target,
            or for ``onnx`` when ``policy.target`` says so).
        save_dir: output folder (``model.json``/``.pdmodel``, ``model.pdiparams``, ``deploy.yaml``,
            and ``custom_ops/<lib>.so`` when the model calls a compiled custom op).
        val_transforms_cfg: the val transforms as config dicts (written to deploy.yaml).
        input_shape: ``[N, C, H, W]``; default ``[None, C, None, None]`` (dynamic); C
            must equal ``img_channels`` (or be -1/None).
        output_op: ``argmax`` | ``softmax`` | ``none``.
        img_channels: bands of the input (recorded as ``img_channels`` in deploy.yaml).
        extra: more keys for the ``Deploy`` section.
        policy: the execution policy (default: the current one, target ``export``).

    Returns:
        The deploy.yaml content (``rewrites`` lists what :func:`prepare` applied).

    Raises:
        ValueError: ``input_shape`` is not N C H W, or its C differs from ``img_channels``.
    """
    log = get_logger()
    policy = policy or current_policy()
    if policy.target != "onnx":
        policy = policy.replace(target="export")
    shape = _normalise_shape(input_shape, img_channels)
    model = prepare(model, policy)
    net = ExportWrapper(model, output_op)
    net.eval()
    static = paddle.jit.to_static(net, input_spec=[paddle.static.InputSpec(list(shape), "float32", "x")],
                                  full_graph=True)
    os.makedirs(save_dir, exist_ok=True)
    for stale in ("model.json", "model.pdmodel", "model.onnx"):  # never mix two exports
        if os.path.isfile(os.path.join(save_dir, stale)):
            os.remove(os.path.join(save_dir, stale))
    if os.path.isfile(os.path.join(save_dir, "deploy.yaml")):  # a previous export's op libraries
        shutil.rmtree(os.path.join(save_dir, "custom_ops"), ignore_errors=True)
    prefix = os.path.join(save_dir, "model")
    with filter_native_stderr():  # tracing: Paddle's harmless "not support input out tensor" line
        paddle.jit.save(static, prefix)
    model_file = next((f for f in ("model.json", "model.pdmodel") if os.path.isfile(os.path.join(save_dir, f))),
                      "model.json")
    ops = custom_ops_of(model)
    deploy: Dict[str, Any] = {
        "Deploy": {
            "model": model_file,
            "params": "model.pdiparams",
            "transforms": copy.deepcopy(list(val_transforms_cfg)),
            "input_shape": [-1 if s is None else s for s in shape],
            "img_channels": shape[1],
            "normalize": _normalisation(val_transforms_cfg),
            "output_op": output_op,
            "output_dtype": "int32" if output_op == "argmax" else "float32",
            "custom_ops": ops,
            "rewrites": list(model.applied_rewrites),
        }
    }
    if ops:
        libs = {}
        for name in ops:
            src = _custom_op_library(name)
            if src and os.path.isfile(src):
                os.makedirs(os.path.join(save_dir, "custom_ops"), exist_ok=True)
                rel = os.path.join("custom_ops", os.path.basename(src))
                shutil.copy2(src, os.path.join(save_dir, rel))
                libs[name] = rel
        deploy["Deploy"]["custom_op_libs"] = libs
        deploy["Deploy"]["paddle_version"] = paddle.__version__
        log.info("[EXPORT] the model calls compiled custom op(s) %s: deploy/python/infer.py registers "
                 "them from deploy.yaml (export with --psa_impl paddle for a model that needs only Paddle)",
                 ", ".join(ops))
    if extra:
        deploy["Deploy"].update(extra)
    _write_deploy(save_dir, deploy)
    log.info("[EXPORT] saved %s and deploy.yaml to %s (input shape %s, -1 = dynamic)", model_file,
             save_dir, deploy["Deploy"]["input_shape"])
    return deploy


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------

class ConversionError(DeploymentError):
    """paddle2onnx could not convert the saved model (the message names the op(s))."""


def require(module: str, purpose: str) -> Any:
    """Import an optional dependency or raise :class:`MissingDependencyError` saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs the optional package '{module}', which is not installed ({e}). "
            f"Install the ONNX extras: {ONNX_INSTALL_HINT}") from e


_P2O_SCRIPT = r"""
import sys
model_file, params_file, onnx_file, opset = sys.argv[1:5]
import paddle2onnx
paddle2onnx.export(model_file, params_file, onnx_file, opset_version=int(opset),
                   auto_upgrade_opset=True, enable_onnx_checker=True, optimize_tool="None",
                   verbose=False)
import onnx
m = onnx.load(onnx_file)
print("P2O_OPSET=%d" % max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))
print("P2O_VERSION=%s" % paddle2onnx.__version__)
"""


def _conversion_error(model_file: str, proc: "subprocess.CompletedProcess[str]") -> ConversionError:
    text = (proc.stdout or "") + "\n" + (proc.stderr or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "[ERROR]" in ln or "not supported" in ln.lower()
              or "unsupported" in ln.lower()]
    ops = sorted(set(re.findall(r"\[OP: ([\w.]+)\]", text)))
    what = f"unsupported op(s): {', '.join(ops)}; " if ops else ""
    detail = "\n".join(errors[:20]) if errors else "\n".join(lines[-20:])
    return ConversionError(f"paddle2onnx could not convert {model_file} ({what}exit code {proc.returncode}):\n"
                           f"{detail}")


def convert_to_onnx(save_dir: str, model_file: str = "model.json", params_file: str = "model.pdiparams",
                    onnx_file: str = "model.onnx", opset: int = DEFAULT_OPSET,
                    timeout: float = 900) -> Dict[str, Any]:
    """Convert a saved Paddle inference model in ``save_dir`` with paddle2onnx.

    Runs in a child process (paddle2onnx aborts the whole process on an op
    it cannot convert). ``opset`` is the minimum; paddle2onnx raises it when
    an op needs a newer one.

    Returns:
        ``{"model": onnx_file, "opset": N, "paddle2onnx": version}``.

    Raises:
        MissingDependencyError: paddle2onnx is not installed.
        ConversionError: the conversion failed (with the op(s) paddle2onnx named).
    """
    require("paddle2onnx", "ONNX export")
    src = os.path.join(save_dir, model_file)
    dst = os.path.join(save_dir, onnx_file)
    if os.path.exists(dst):
        os.remove(dst)
    env = child_environment(PYTHONUNBUFFERED="1", GLOG_minloglevel="2")
    proc = subprocess.run([sys.executable, "-c", _P2O_SCRIPT, src, os.path.join(save_dir, params_file), dst,
                           str(int(opset))], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0 or not os.path.isfile(dst) or os.path.getsize(dst) == 0:
        if os.path.exists(dst):
            os.remove(dst)
        raise _conversion_error(src, proc)
    found = dict(re.findall(r"^(P2O_\w+)=(\S+)$", proc.stdout, flags=re.M))
    return {"model": onnx_file, "opset": int(found.get("P2O_OPSET", opset)),
            "paddle2onnx": found.get("P2O_VERSION", "?")}


def export_onnx(model: paddle.nn.Layer, save_dir: str, val_transforms_cfg: Sequence[Dict[str, Any]],
                input_shape: Optional[Sequence[int]] = None, output_op: str = "argmax",
                img_channels: int = 3, opset: int = DEFAULT_OPSET,
                extra: Optional[Dict[str, Any]] = None,
                policy: Optional[ExecutionPolicy] = None) -> Dict[str, Any]:
    """Export ``model`` to ONNX (``model.onnx``) through a saved Paddle model.

    The Paddle model saved alongside (``model.json``) is the model prepared for the ``onnx``
    target (:func:`paddleseg_ext.runtime.prepare`: forms paddle2onnx converts, same
    outputs), so the folder also works with deploy/python/infer.py. deploy.yaml gets an
    ``onnx`` entry.

    Raises:
        MissingDependencyError: paddle2onnx is not installed (checked first).
        ConversionError: paddle2onnx failed (names the op).
    """
    require("paddle2onnx", "ONNX export")
    log = get_logger()
    policy = (policy or current_policy()).replace(target="onnx")
    deploy = export(model, save_dir, val_transforms_cfg, input_shape, output_op, img_channels, extra,
                    policy=policy)
    if deploy["Deploy"]["custom_ops"]:
        raise ValueError(f"ONNX export: the model still calls compiled custom op(s) "
                         f"{deploy['Deploy']['custom_ops']}, which paddle2onnx cannot convert")
    notes = deploy["Deploy"]["rewrites"]
    if notes:
        log.info("[EXPORT] ONNX forms: %s", ", ".join(notes))
    info = convert_to_onnx(save_dir, deploy["Deploy"]["model"], deploy["Deploy"]["params"], opset=opset)
    info["rewrites"] = notes
    deploy["Deploy"]["onnx"] = info
    _write_deploy(save_dir, deploy)
    log.info("[EXPORT] saved %s (opset %d, paddle2onnx %s) to %s", info["model"], info["opset"],
             info["paddle2onnx"], save_dir)
    return deploy


def check_onnx(save_dir: str, model: paddle.nn.Layer, shape: Sequence[int] = (1, 3, 64, 64),
               output_op: str = "argmax", seed: int = 0) -> Dict[str, float]:
    """Run ``save_dir/model.onnx`` with onnxruntime and compare with the dygraph model.

    Returns:
        ``{"max_abs_diff": ..., "argmax_agreement": ...}`` (diff is 0 for argmax outputs).
    """
    import numpy as np

    ort = require("onnxruntime", "Checking the ONNX model")
    x = np.random.RandomState(seed).rand(*shape).astype("float32")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(os.path.join(save_dir, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    model.eval()
    with paddle.no_grad():
        ref = ExportWrapper(model, output_op)(paddle.to_tensor(x)).numpy()
    if output_op == "argmax":
        return {"max_abs_diff": 0.0, "argmax_agreement": float((got == ref).mean())}
    return {"max_abs_diff": float(np.abs(got - ref).max()),
            "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}
