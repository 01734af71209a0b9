"""Point-wise spatial attention (PSA) mask operator.

Implements the "collect" and "distribute" mask re-arrangement of PSANet:
Zhao et al., "PSANet: Point-wise Spatial Attention Network for Scene Parsing",
ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf.

Input ``x`` is ``[N, mh*mw, H, W]`` (an ``mh x mw`` attention window predicted
at every position); output ``y`` is ``[N, H*W, H, W]`` (a full ``H*W x H*W``
attention map per image). With ``hh = (mh-1)//2`` and ``hw = (mw-1)//2``, mask
cell ``(i, j)`` at position ``(h, w)`` targets ``(h+i-hh, w+j-hw)`` and is used
only if that target lies inside the map:

* collect (0):    ``y[n, th*W + tw, h, w] = x[n, i*mw + j, h, w]``
* distribute (1): ``y[n, h*W + w, th, tw] = x[n, i*mw + j, h, w]``

All other entries of ``y`` are 0. Two implementations give identical results:

* the compiled custom op (``custom_ops/psa_mask``), built lazily on first use
  into a per-user cache (or ahead of time with
  ``python -m paddleseg_ext.ops.build``);
* :func:`psa_mask_reference`, pure Paddle (a gather with an index map), used as
  the fallback and as the test oracle.

Choose with ``impl=`` or ``PADDLESEG_EXT_PSA_IMPL`` = ``op`` | ``paddle`` |
``auto`` (default: the op if it can be loaded or built, else pure Paddle with
one warning).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator, Sequence, Union

import paddle

__all__ = [
    "psa_mask",
    "psa_mask_reference",
    "build_op",
    "load_op_library",
    "is_compiled_op_available",
    "op_cache_dir",
    "op_source_dir",
    "OP_NAME",
]

#: Name the op is registered under (``PD_BUILD_OP(psa_mask)``); saved
#: programs refer to it by this name.
OP_NAME = "psa_mask"
# Shared-library name; distinct from OP_NAME so it never shadows a module.
_LIB_NAME = "paddleseg_ext_psa_mask"

_IMPL_ENV = "PADDLESEG_EXT_PSA_IMPL"
_CACHE_ENV = "PADDLESEG_EXT_OP_CACHE"
_NO_BUILD_ENV = "PADDLESEG_EXT_OP_NO_BUILD"
_BUILD_OK = "BUILD_OK.json"

_PSA_TYPES = {"collect": 0, "distribute": 1}
_OP_DTYPES = ("float32", "float64")

_CXX_FLAGS = ["-O3", "-pthread"]
_LD_FLAGS = ["-pthread"]
_CUDA_FLAGS = ["-O3"]

_BUILD_HINT = (
    "Build it ahead of time with `python -m paddleseg_ext.ops.build` (needs a "
    "C++ compiler, plus nvcc for CUDA), or select the pure-Paddle path with "
    f"impl='paddle' or {_IMPL_ENV}=paddle."
)

PsaType = Union[str, int]
MaskSize = Union[int, Sequence[int]]


# --------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------


def _psa_type_id(psa_type: PsaType) -> int:
    if isinstance(psa_type, str) and psa_type.lower() in _PSA_TYPES:
        return _PSA_TYPES[psa_type.lower()]
    if not isinstance(psa_type, bool) and isinstance(psa_type, int) and psa_type in (0, 1):
        return int(psa_type)
    raise ValueError(
        "psa_mask: psa_type must be 'collect' (0) or 'distribute' (1), "
        f"got {psa_type!r}."
    )


def _mask_hw(mask_size: MaskSize) -> tuple[int, int]:
    if isinstance(mask_size, int) and not isinstance(mask_size, bool):
        mask_size = (mask_size, mask_size)
    try:
        mh, mw = (int(v) for v in mask_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"psa_mask: mask_size must be (mask_h, mask_w), got {mask_size!r}."
        ) from None
    if mh < 1 or mw < 1:
        raise ValueError(
            f"psa_mask: mask_size must be positive, got ({mh}, {mw})."
        )
    return mh, mw


def _check_input(x: paddle.Tensor, mh: int, mw: int) -> None:
    shape = list(x.shape)
    if len(shape) != 4:
        raise ValueError(
            "psa_mask: x must be 4-D [N, mask_h*mask_w, H, W], got shape "
            f"{shape}."
        )
    channels = shape[1]
    # -1/None: unknown at graph-build time; checked again by the op kernel.
    if channels is not None and channels >= 0 and channels != mh * mw:
        raise ValueError(
            f"psa_mask: x has {channels} channels but mask_size ({mh}, {mw}) "
            f"needs mask_h*mask_w = {mh * mw}."
        )


def _dtype_name(x: paddle.Tensor) -> str:
    return str(x.dtype).replace("paddle.", "")


# --------------------------------------------------------------------------
# Pure-Paddle implementation
# --------------------------------------------------------------------------

# Dygraph cache of index maps keyed by (H, W, mh, mw, type, place): building
# one costs several passes over H*W x H*W int64s, more than the gather itself.
_INDEX_CACHE: dict[tuple, paddle.Tensor] = {}
_INDEX_CACHE_MAX = 8


def _index_map(
    h: paddle.Tensor, w: paddle.Tensor, mh: int, mw: int, type_id: int
) -> paddle.Tensor:
    """Flat gather indices into one image of ``x`` with a zero channel appended.

    Args:
        h: Map height as an int64 tensor (dynamic in static graphs).
        w: Map width as an int64 tensor.
        mh: Mask height.
        mw: Mask width.
        type_id: 0 collect, 1 distribute.

    Returns:
        int64 tensor ``[H*W * H*W]``: entry ``(row, col)`` of the output's
        ``[H*W, H*W]`` view reads ``x_ext[k * H*W + p]``, where ``x_ext`` is one
        image as ``[mh*mw + 1, H*W]``, ``p`` the source position and ``k`` the
        mask cell, or ``k = mh*mw`` (the appended zero channel) when no cell
        of ``p`` reaches the target.
    """
    hh, hw = (mh - 1) // 2, (mw - 1) // 2
    plane = h * w
    pos = paddle.arange(0, plane, dtype="int64")
    if type_id == 0:  # collect: rows are targets t, columns sources p
        t, p = pos.unsqueeze(1), pos.unsqueeze(0)
    else:  # distribute: rows are sources p, columns targets t
        p, t = pos.unsqueeze(1), pos.unsqueeze(0)
    i = t // w - p // w + hh
    j = t % w - p % w + hw
    used = (i >= 0) & (i < mh) & (j >= 0) & (j < mw)
    # k for used cells, mh*mw (the zero channel) otherwise. Arithmetic rather
    # than paddle.where, which queries .place (unsupported in PIR graphs).
    k = (i * mw + j - mh * mw) * used.astype("int64") + mh * mw
    return (k * plane + p).reshape([-1])


# unified: paddle.jit.to_static (AST and SOT) runs these as plain Python on
# the graph's values instead of transcribing them. Transcribed, the dispatch
# and cache code breaks, and SOT turns the int attributes into symbolic
# values, which the op rejects when one program uses both PSA types.
@paddle.jit.marker.unified
def psa_mask_reference(
    x: paddle.Tensor, psa_type: PsaType, mask_size: MaskSize
) -> paddle.Tensor:
    """PSA mask in pure Paddle ops (differentiable, exportable).

    Gathers from ``x`` with an index map derived from ``paddle.shape(x)`` at
    run time, so it works under ``paddle.jit.to_static`` with dynamic spatial
    sizes (``InputSpec([None, C, None, None])``); unused cells read an
    appended zero channel. Semantics as in PSANet (Zhao et al., ECCV 2018,
    https://hszhao.github.io/papers/eccv18_psanet.pdf).

    Args:
        x: ``[N, mask_h*mask_w, H, W]`` float tensor.
        psa_type: ``'collect'``/``0`` or ``'distribute'``/``1``.
        mask_size: ``(mask_h, mask_w)`` (or one int for a square mask).

    Returns:
        ``[N, H*W, H, W]`` tensor of ``x``'s dtype.

    Raises:
        ValueError: On a bad ``psa_type``/``mask_size`` or a wrong input shape.
    """
    type_id = _psa_type_id(psa_type)
    mh, mw = _mask_hw(mask_size)
    _check_input(x, mh, mw)
    shape = paddle.shape(x)
    n, h, w = shape[0], shape[2], shape[3]
    plane = h * w

    if paddle.in_dynamic_mode():
        key = (int(h), int(w), mh, mw, type_id, str(x.place))
        index = _INDEX_CACHE.get(key)
        if index is None:
            with paddle.no_grad():
                index = _index_map(h, w, mh, mw, type_id)
            if len(_INDEX_CACHE) >= _INDEX_CACHE_MAX:
                _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
            _INDEX_CACHE[key] = index
    else:
        index = _index_map(h, w, mh, mw, type_id)

    x_flat = x.reshape([0, mh * mw, -1])
    zero = paddle.zeros([n, 1, plane], dtype=x.dtype)
    x_ext = paddle.concat([x_flat, zero], axis=1).reshape([0, -1])
    # Gather along axis 1 with one index map shared by the batch. Of Paddle's
    # CPU gathers this had the best forward + backward time (the 1-D gather
    # is faster forward but its scatter-add backward is ~6x slower).
    y = paddle.gather(x_ext, index, axis=1)
    return y.reshape(paddle.stack([n, plane, h, w]))


# --------------------------------------------------------------------------
# Compiled op: locate, build, load
# --------------------------------------------------------------------------


def op_source_dir() -> Path:
    """Directory holding the op's C++/CUDA sources (found from ``__file__``).

    The repository layout (``custom_ops/psa_mask``, e.g. after
    ``pip install -e .``) wins; ``paddleseg_ext/ops/csrc`` is the place for
    sources shipped inside an installed package.
    """
    here = Path(__file__).resolve().parent
    candidates = [here.parents[1] / "custom_ops" / "psa_mask", here / "csrc"]
    for candidate in candidates:
        if (candidate / "psa_mask.cc").is_file():
            return candidate
    return candidates[0]


def _sources(with_cuda: bool) -> list[Path]:
    src = op_source_dir()
    files = [src / "psa_mask.cc"]
    if with_cuda:
        files.append(src / "psa_mask.cu")
    return files


def _want_cuda() -> bool:
    return bool(paddle.is_compiled_with_cuda()) and shutil.which("nvcc") is not None


def _build_key(with_cuda: bool) -> str:
    """Hash of everything the binary depends on; a new key means a rebuild."""
    digest = hashlib.sha256()
    src = op_source_dir()
    for name in ("psa_mask_common.h", "psa_mask.cc", "psa_mask.cu"):
        path = src / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    meta = {
        "paddle": paddle.__version__,
        "commit": getattr(paddle.version, "commit", ""),
        "cuda": with_cuda,
        "python": list(sys.version_info[:2]),
        "machine": platform.machine(),
        "flags": [_CXX_FLAGS, _LD_FLAGS, _CUDA_FLAGS],
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return f"paddle{paddle.__version__}-{'cuda' if with_cuda else 'cpu'}-{digest.hexdigest()[:16]}"


def op_cache_dir() -> Path:
    """Root of the per-user build cache.

    ``$PADDLESEG_EXT_OP_CACHE`` if set, else
    ``$XDG_CACHE_HOME/paddleseg_ext/ops`` (``~/.cache/paddleseg_ext/ops``).
    """
    env = os.environ.get(_CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base).expanduser().resolve() / "paddleseg_ext" / "ops"


def _build_dir(with_cuda: bool) -> Path:
    return op_cache_dir() / _build_key(with_cuda)


def _so_path(build_dir: Path) -> Path:
    # Layout produced by paddle.utils.cpp_extension.load(build_directory=...).
    return build_dir / _LIB_NAME / f"{_LIB_NAME}.so"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock: one process builds, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# Per-process state: the op registers into Paddle's global registry, which
# must happen at most once per process.
_STATE: dict = {
    "module": None,  # loaded op module
    "so_path": None,  # its shared library
    "error": None,  # a failed build: not retried in this process
    "reason": None,  # why the op is unavailable right now (for messages)
    "warned": False,  # the fallback warning was shown
}
_STATE_LOCK = threading.RLock()
# Paddle's loader logs "using custom operator only" at INFO on every load whatever `verbose`
# says, through its own handler and the root logger's (two lines): drop that one message.
logging.getLogger("utils.cpp_extension").addFilter(lambda r: r.getMessage() != "using custom operator only")


def _import_built(so_path: Path) -> ModuleType:
    from paddle.utils.cpp_extension.extension_utils import (
        _import_module_from_library,
    )

    return _import_module_from_library(_LIB_NAME, str(so_path.parent), False)


def _load_or_build(allow_build: bool, verbose: bool = False) -> tuple[ModuleType, Path]:
    """Load the cached library, building it first if needed and allowed."""
    with_cuda = _want_cuda()
    build_dir = _build_dir(with_cuda)
    so_path = _so_path(build_dir)
    marker = build_dir / _BUILD_OK
    if marker.exists() and so_path.exists():
        return _import_built(so_path), so_path
    if not allow_build:
        raise RuntimeError(f"no prebuilt library at {so_path}")
    for src in _sources(with_cuda):
        if not src.exists():
            raise RuntimeError(f"op source {src} is missing")
    with _file_lock(build_dir.with_name(build_dir.name + ".lock")):
        # Another process may have finished the build while we waited.
        if marker.exists() and so_path.exists():
            return _import_built(so_path), so_path
        from paddle.utils.cpp_extension import load

        build_dir.mkdir(parents=True, exist_ok=True)
        module = load(
            name=_LIB_NAME,
            sources=[str(s) for s in _sources(with_cuda)],
            extra_cxx_cflags=list(_CXX_FLAGS),
            extra_cuda_cflags=list(_CUDA_FLAGS),
            extra_ldflags=list(_LD_FLAGS),
            build_directory=str(build_dir),
            verbose=verbose,
        )
        if not so_path.exists():
            raise RuntimeError(f"build finished but {so_path} is missing")
        # Written last, atomically: its presence means the .so is complete.
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"so_path": str(so_path), "cuda": with_cuda}))
        os.replace(tmp, marker)
        return module, so_path


def _get_op(allow_build: bool = True) -> ModuleType | None:
    """The loaded op module, or None (why: ``_STATE['reason']``)."""
    with _STATE_LOCK:
        if _STATE["module"] is not None:
            return _STATE["module"]
        if _STATE["error"] is not None:
            return None
        if allow_build and os.environ.get(_NO_BUILD_ENV, "") not in ("", "0"):
            allow_build = False
        try:
            module, so_path = _load_or_build(allow_build)
        except Exception as exc:  # noqa: BLE001 - any failure means "fall back"
            _STATE["reason"] = f"{type(exc).__name__}: {exc}"
            if allow_build:
                _STATE["error"] = _STATE["reason"]
            elif os.environ.get(_NO_BUILD_ENV, "") not in ("", "0"):
                _STATE["reason"] += f" and building is disabled by {_NO_BUILD_ENV}"
            return None
        _STATE["module"], _STATE["so_path"] = module, so_path
        return module


def build_op(verbose: bool = False) -> Path:
    """Build (if not cached) and load the compiled op; return the ``.so`` path.

    Args:
        verbose: Show the compiler output.

    Returns:
        Path of the shared library in the per-user cache.

    Raises:
        RuntimeError: If the build fails.
    """
    with _STATE_LOCK:
        if _STATE["so_path"] is not None:
            return _STATE["so_path"]
        try:
            module, so_path = _load_or_build(allow_build=True, verbose=verbose)
        except Exception as exc:
            raise RuntimeError(
                f"psa_mask: building the compiled op failed: {exc}"
            ) from exc
        _STATE.update(module=module, so_path=so_path, error=None, reason=None)
        return so_path


def load_op_library(build: bool = True) -> tuple[ModuleType, str]:
    """Register the compiled op in this process (for training or deployment).

    After this call, programs saved with ``paddle.jit.save`` that contain the
    op can be loaded with ``paddle.jit.load`` or run by a Python
    ``paddle.inference`` predictor in the same process. C++ Paddle Inference
    instead links or ``dlopen``s the returned ``.so`` before creating the
    predictor.

    Args:
        build: Build the library if no cached build exists.

    Returns:
        ``(module, so_path)``: the module exposing ``psa_mask(x, psa_type,
        mask_h, mask_w)`` and the absolute path of the shared library.

    Raises:
        RuntimeError: If the op can be neither loaded nor built.
    """
    module = _get_op(allow_build=build)
    if module is None:
        reason = _STATE["reason"] or "unknown reason"
        raise RuntimeError(
            f"psa_mask: the compiled op is not available ({reason}). {_BUILD_HINT}"
        )
    return module, str(_STATE["so_path"])


def is_compiled_op_available(build: bool = False) -> bool:
    """Whether the compiled op is (or can be) loaded in this process.

    Args:
        build: Also try to build it when no cached build exists (slow).

    Returns:
        True if the op is registered after the call.
    """
    return _get_op(allow_build=build) is not None


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def _fallback_warning() -> None:
    with _STATE_LOCK:
        if _STATE["warned"]:
            return
        _STATE["warned"] = True
        reason = _STATE["reason"] or "unknown reason"
    warnings.warn(
        "psa_mask: the compiled PSA mask op is unavailable "
        f"({reason}); using the slower pure-Paddle implementation. "
        + _BUILD_HINT,
        RuntimeWarning,
        stacklevel=3,
    )


@paddle.jit.marker.unified
def psa_mask(
    x: paddle.Tensor,
    psa_type: PsaType,
    mask_size: MaskSize,
    impl: str | None = None,
) -> paddle.Tensor:
    """PSA collect/distribute mask (PSANet, Zhao et al., ECCV 2018).

    See https://hszhao.github.io/papers/eccv18_psanet.pdf. Uses the compiled
    op when available; both paths give identical values and gradients.

    Args:
        x: ``[N, mask_h*mask_w, H, W]`` float32/float64 tensor.
        psa_type: ``'collect'``/``0`` or ``'distribute'``/``1``.
        mask_size: ``(mask_h, mask_w)``; even sizes give a lopsided window
            (``hh = (mask_h-1)//2`` cells above the centre).
        impl: ``'op'``, ``'paddle'`` or ``'auto'``; default
            ``$PADDLESEG_EXT_PSA_IMPL`` or ``'auto'``.

    Returns:
        ``[N, H*W, H, W]`` tensor of ``x``'s dtype.

    Raises:
        ValueError: Bad ``psa_type``, ``mask_size``, ``impl`` or input shape.
        RuntimeError: ``impl='op'`` and the compiled op is unavailable.
    """
    type_id = _psa_type_id(psa_type)
    mh, mw = _mask_hw(mask_size)
    _check_input(x, mh, mw)
    mode = (impl or os.environ.get(_IMPL_ENV) or "auto").strip().lower()
    if mode not in ("op", "paddle", "auto"):
        raise ValueError(
            f"psa_mask: impl must be 'op', 'paddle' or 'auto', got {mode!r} "
            f"(from {'impl=' if impl else _IMPL_ENV})."
        )
    if mode == "paddle":
        return psa_mask_reference(x, type_id, (mh, mw))

    dtype_ok = _dtype_name(x) in _OP_DTYPES
    if mode == "op":
        if not dtype_ok:
            raise ValueError(
                f"psa_mask: the compiled op supports {_OP_DTYPES}, got "
                f"{_dtype_name(x)}; use impl='paddle'."
            )
        module, _ = load_op_library(build=True)
        return module.psa_mask(x, type_id, mh, mw)

    # auto
    on_gpu = paddle.in_dynamic_mode() and not x.place.is_cpu_place()
    if dtype_ok and not (on_gpu and not _want_cuda()):
        module = _get_op(allow_build=True)
        if module is not None:
            return module.psa_mask(x, type_id, mh, mw)
        _fallback_warning()
    return psa_mask_reference(x, type_id, (mh, mw))
