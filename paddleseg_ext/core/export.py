"""Export to a static Paddle Inference model plus ``deploy.yaml``, and to ONNX.

* :func:`export` traces the eval-mode model with ``paddle.jit.to_static``
  (default input ``[None, C, None, None]``: batch and spatial size dynamic)
  and writes ``model.json`` (PIR) + ``model.pdiparams`` + ``deploy.yaml``.
  Compiled custom ops the model calls (PSANet's ``psa_mask`` when built with
  ``psa_impl: op``) are listed in deploy.yaml, and their shared library is
  copied next to the model (``custom_ops/``) so a deployment can register it.
* :func:`export_onnx` does the same with an ONNX-compatible variant of the
  model (see :func:`onnx_compatible`), then converts the saved Paddle model
  with paddle2onnx (in a child process: paddle2onnx aborts the process on
  an op it cannot convert) into ``model.onnx`` and records it in deploy.yaml.
  Needs the optional dependencies: ``pip install -e .[onnx]``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import paddle
import yaml

from ..cvlibs.errors import DeploymentError, MissingDependencyError  # noqa: F401 - raised and re-exported here
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
           img_channels: int = 3, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Trace ``model`` with ``paddle.jit.to_static`` and save it with ``deploy.yaml``.

    Args:
        model: weights loaded.
        save_dir: output folder (``model.json``/``.pdmodel``, ``model.pdiparams``, ``deploy.yaml``,
            and ``custom_ops/<lib>.so`` when the model calls a compiled custom op).
        val_transforms_cfg: the val transforms as config dicts (written to deploy.yaml).
        input_shape: ``[N, C, H, W]``; default ``[None, C, None, None]`` (dynamic); C
            must equal ``img_channels`` (or be -1/None).
        output_op: ``argmax`` | ``softmax`` | ``none``.
        img_channels: bands of the input (recorded as ``img_channels`` in deploy.yaml).
        extra: more keys for the ``Deploy`` section.

    Returns:
        The deploy.yaml content.

    Raises:
        ValueError: ``input_shape`` is not N C H W, or its C differs from ``img_channels``.
    """
    log = get_logger()
    model.eval()
    shape = _normalise_shape(input_shape, img_channels)
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
                 "them from deploy.yaml (export with psa_impl=paddle for a model that needs only Paddle)",
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


def _bin_matrix(length: paddle.Tensor, bins: int, dtype: Any) -> paddle.Tensor:
    """``[bins, length]`` averaging weights of adaptive average pooling along one axis.

    Bin ``i`` covers ``[floor(i*L/b), ceil((i+1)*L/b))`` (Paddle's and
    PyTorch's definition); its row holds ``1/size`` inside and 0 outside.
    """
    i = paddle.arange(bins, dtype="int64")
    start = paddle.floor_divide(i * length, paddle.full([1], bins, "int64"))
    end = paddle.floor_divide((i + 1) * length + (bins - 1), paddle.full([1], bins, "int64"))
    pos = paddle.arange(length, dtype="int64")
    inside = (pos.unsqueeze(0) >= start.unsqueeze(1)) & (pos.unsqueeze(0) < end.unsqueeze(1))
    return inside.astype(dtype) / (end - start).astype(dtype).unsqueeze(1)


class MatmulAdaptiveAvgPool2D(paddle.nn.Layer):
    """Adaptive average pooling written as two matmuls with bin matrices.

    Same values as ``nn.AdaptiveAvgPool2D`` for any input size (up to float
    rounding), but built from ops that paddle2onnx converts with a dynamic
    input size (``arange``, comparisons, ``matmul``); paddle2onnx converts the
    native adaptive ``pool2d`` only for a static input shape.

    Args:
        output_size: ``b`` or ``(bh, bw)``.
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"MatmulAdaptiveAvgPool2D: output_size must be b or (bh, bw) ints, got "
                             f"{output_size!r}")
        self.output_size = size

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shape = paddle.shape(x).astype("int64")
        rows = _bin_matrix(shape[2], self.output_size[0], x.dtype)  # [bh, H]
        cols = _bin_matrix(shape[3], self.output_size[1], x.dtype)  # [bw, W]
        return paddle.matmul(paddle.matmul(rows, x), cols, transpose_y=True)  # [N, C, bh, bw]


def _replaceable_pool(layer: paddle.nn.Layer) -> Optional[Tuple[int, int]]:
    if not isinstance(layer, paddle.nn.AdaptiveAvgPool2D):
        return None
    if getattr(layer, "_data_format", "NCHW") != "NCHW":
        return None
    size = getattr(layer, "_output_size", None)
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    if len(size) != 2 or any(not isinstance(s, int) for s in size):
        return None  # None entries (keep that axis): leave to paddle2onnx
    return size


@contextlib.contextmanager
def onnx_compatible(model: paddle.nn.Layer) -> Iterator[List[str]]:
    """Temporarily turn ``model`` into a variant paddle2onnx can convert.

    * ``nn.AdaptiveAvgPool2D`` (PSPNet's pyramid pooling) ->
      :class:`MatmulAdaptiveAvgPool2D` (same values; paddle2onnx rejects an
      adaptive ``pool2d`` whose input size is dynamic).
    * PSA layers (``psa_impl`` attribute) -> ``psa_impl='paddle'``: the
      pure-Paddle PSA mask (gather with an index map) instead of the compiled
      ``psa_mask`` custom op, which paddle2onnx cannot convert.

    Everything is restored on exit. Yields the list of changes made.
    """
    swapped: List[Tuple[paddle.nn.Layer, str, paddle.nn.Layer]] = []
    impls: List[Tuple[paddle.nn.Layer, str, Any]] = []
    notes: List[str] = []
    try:
        for parent in model.sublayers(include_self=True):
            for name, child in list(parent._sub_layers.items()):
                size = _replaceable_pool(child) if child is not None else None
                if size is not None:
                    parent._sub_layers[name] = MatmulAdaptiveAvgPool2D(size)
                    swapped.append((parent, name, child))
        if swapped:
            notes.append(f"{len(swapped)} AdaptiveAvgPool2D -> MatmulAdaptiveAvgPool2D (dynamic-size ONNX)")
        n_psa = 0
        for layer in model.sublayers(include_self=True):
            # class-level check: reading the custom_ops property may resolve (and build) the op
            if isinstance(getattr(layer, "psa_impl", None), str) and hasattr(type(layer), "custom_ops"):
                impls.append((layer, "psa_impl", layer.psa_impl))
                impls.append((layer, "_resolved_impl", getattr(layer, "_resolved_impl", None)))
                layer.psa_impl = "paddle"
                if hasattr(layer, "_resolved_impl"):
                    layer._resolved_impl = None
                n_psa += 1
        if n_psa:
            notes.append(f"{n_psa} PSA layer(s) -> psa_impl=paddle (the compiled psa_mask op cannot "
                         "be converted to ONNX)")
        left = custom_ops_of(model)
        if left:
            raise ValueError(f"ONNX export: the model still calls compiled custom op(s) {left}, which "
                             "paddle2onnx cannot convert; build it with a pure-Paddle implementation "
                             "(PSANet: model.psa_impl=paddle)")
        yield notes
    finally:
        for parent, name, child in reversed(swapped):
            parent._sub_layers[name] = child
        for layer, attr, value in reversed(impls):
            setattr(layer, attr, value)


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
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_minloglevel="2")
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
                extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Export ``model`` to ONNX (``model.onnx``) through a saved Paddle model.

    The Paddle model saved alongside (``model.json``) is the ONNX-compatible
    variant (see :func:`onnx_compatible`; same outputs), so the folder also
    works with deploy/python/infer.py. deploy.yaml gets an ``onnx`` entry.

    Raises:
        MissingDependencyError: paddle2onnx is not installed (checked first).
        ConversionError: paddle2onnx failed (names the op).
    """
    require("paddle2onnx", "ONNX export")
    log = get_logger()
    with onnx_compatible(model) as notes:
        deploy = export(model, save_dir, val_transforms_cfg, input_shape, output_op, img_channels, extra)
    for note in notes:
        log.info("[EXPORT] ONNX variant: %s", note)
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
