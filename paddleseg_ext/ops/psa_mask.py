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

import warnings
from pathlib import Path
from types import ModuleType

import paddle

from .custom_op_build import IMPL_ENV, CompiledOp, op_cache_dir, want_cuda
from .psa_args import (OP_DTYPES, MaskSize, PsaType, cpu_copy_dtype, dtype_name, mask_hw,
                       psa_type_id)

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
_IMPL_ENV = IMPL_ENV


_BUILD_HINT = (
    "Build it ahead of time with `python -m paddleseg_ext.ops.build` (needs a "
    "C++ compiler, plus nvcc for CUDA), or select the pure-Paddle path with "
    f"impl='paddle' or {_IMPL_ENV}=paddle."
)



# --------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------


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


def _call_op(module: ModuleType, x: paddle.Tensor, type_id: int, mh: int, mw: int):
    """The compiled op on ``x``, through a float32 copy where
    :func:`cpu_copy_dtype` says so (exact: the op only moves values)."""
    wide = cpu_copy_dtype(x)
    if wide is None:
        return module.psa_mask(x, type_id, mh, mw)
    return module.psa_mask(x.astype(wide), type_id, mh, mw).astype(x.dtype)


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
    type_id = psa_type_id(psa_type)
    mh, mw = mask_hw(mask_size)
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
# Compiled op: built, cached and loaded by custom_op_build
# --------------------------------------------------------------------------

_OP = CompiledOp(
    OP_NAME, "psa_mask", cpu_sources=["psa_mask.cc"], cuda_sources=["psa_mask.cu"],
    headers=["psa_mask/psa_mask_common.h", "psa_mask/psa_mask_cuda.h",
             "psa_mask/psa_mask_kernels.cuh", "common/cpu_parallel.h", "common/op_dtypes.h",
             "common/kernel_support.h", "common/cuda_dtype_dispatch.h"],
    build_hint=_BUILD_HINT)


def op_source_dir() -> Path:
    """Directory holding the op's C++/CUDA sources (found from ``__file__``)."""
    return _OP.source_dir()


def _want_cuda() -> bool:
    return want_cuda()


def _get_op(allow_build: bool = True) -> ModuleType | None:
    """The loaded op module, or None (why: ``_OP.state['reason']``)."""
    return _OP.get(allow_build)


def build_op(verbose: bool = False) -> Path:
    """Build (if not cached) and load the compiled op; return the ``.so`` path.

    Args:
        verbose: Show the compiler output.

    Returns:
        Path of the shared library in the per-user cache.

    Raises:
        RuntimeError: If the build fails.
    """
    return _OP.build(verbose)


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
    return _OP.load_library(build)


def is_compiled_op_available(build: bool = False) -> bool:
    """Whether the compiled op is (or can be) loaded in this process.

    Args:
        build: Also try to build it when no cached build exists (slow).

    Returns:
        True if the op is registered after the call.
    """
    return _OP.available(build)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def _fallback_warning() -> None:
    if not _OP.take_warning():
        return
    reason = _OP.state["reason"] or "unknown reason"
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
        x: ``[N, mask_h*mask_w, H, W]`` float32/float64/float16/bfloat16
            tensor (the 16-bit types through a float32 copy where the op has
            no CUDA kernels).
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
    type_id = psa_type_id(psa_type)
    mh, mw = mask_hw(mask_size)
    _check_input(x, mh, mw)
    if impl is None:
        from paddleseg_ext.runtime.policy import current_policy

        mode = current_policy().psa_impl
        if mode == "fused":  # PSANet's fused choice; the mask op itself: auto
            mode = "auto"
    else:
        mode = str(impl).strip().lower()
    if mode not in ("op", "paddle", "auto"):
        raise ValueError(f"psa_mask: impl must be 'op', 'paddle' or 'auto', got {impl!r}.")
    if mode == "paddle":
        return psa_mask_reference(x, type_id, (mh, mw))

    dtype_ok = dtype_name(x) in OP_DTYPES
    if mode == "op":
        if not dtype_ok:
            raise ValueError(
                f"psa_mask: the compiled op supports {OP_DTYPES}, got "
                f"{dtype_name(x)}; use impl='paddle'."
            )
        module, _ = load_op_library(build=False)
        return _call_op(module, x, type_id, mh, mw)

    # auto
    on_gpu = paddle.in_dynamic_mode() and not x.place.is_cpu_place()
    if dtype_ok and not (on_gpu and not _want_cuda()):
        module = _get_op(allow_build=False)
        if module is not None:
            return _call_op(module, x, type_id, mh, mw)
        _fallback_warning()
    return psa_mask_reference(x, type_id, (mh, mw))
