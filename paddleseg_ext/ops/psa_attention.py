"""Fused point-wise spatial attention: PSA mask + softmax + aggregation in one op.

PSANet (Zhao et al., "PSANet: Point-wise Spatial Attention Network for Scene
Parsing", ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf)
aggregates features ``x: [N, C, H, W]`` with an attention map built from
per-position window logits ``a: [N, mh*mw, H, W]``::

    out = bmm(x.reshape([N, C, P]), softmax(psa_mask(a), axis=1).reshape([N, P, P])) / norm

(``P = H*W``; without the softmax when ``softmax=False``). :func:`psa_attention`
computes exactly that without the ``[P, P]`` map, in ``O(N * P * (C + mh*mw))``
work and memory.

Derivation (one image; ``custom_ops/psa_attention/README.md`` has it in full).
``Y = psa_mask(a)`` is ``[P, P]``, rows ``r`` = source positions, columns
``q`` = receiving positions. Column ``q`` holds the logits ``l_rq`` of a window
``win(q)`` (``collect``: ``l = a[k, q]`` at row ``q + off(k)``; ``distribute``:
``l = a[k, p]`` at row ``p = q - off(k)``, ``off(i, j) = (i - hh, j - hw)``,
only cells whose row lies in the map) and ``z_q = P - |win(q)|`` zeros.

* Softmax over rows: ``m_q = max(max_win l, 0 if z_q > 0)``,
  ``lse_q = m_q + log(sum_win e^(l - m_q) + z_q e^(-m_q))``; window weights
  ``w_rq = e^(l_rq - lse_q)``, each zero weighs ``b_q = e^(-lse_q)`` (``b_q = 0``
  when ``z_q = 0``). With ``S = sum_r x_r`` (all positions)::

      out_q = (sum_{r in win(q)} x_r (w_rq - b_q) + b_q S) / norm

  Without softmax: ``w = l``, ``b = 0``.
* Backward, ``g = dout / norm``. To ``x``: ``dx_r = sum_q g_q W_rq =
  T + sum_{q : r in win(q)} g_q (w_rq - b_q)`` with ``T = sum_q b_q g_q`` (the
  same for every row ``r``); the columns ``q`` containing row ``r`` are the
  other walk (``collect``: ``q = r - off(k)``; ``distribute``: ``q = r + off(k)``).
  To the logits (window entries only; the zeros are constants):
  ``dl_rq = w_rq (<x_r, g_q> - D_q)``, ``D_q = <g_q, norm * out_q> =
  <dout_q, out_q>``; without softmax ``dl_rq = <x_r, g_q>``. Cells whose row
  falls off the map get exactly 0.

Two implementations give the same values and gradients:

* the compiled custom op ``psa_attention`` (``custom_ops/psa_attention``),
  built lazily into the per-user cache like ``psa_mask``;
* :func:`psa_attention_reference`: pure Paddle, chunked over columns (a
  ``[P, chunk]`` slice of the map at a time, recomputed in the backward by a
  :class:`paddle.autograd.PyLayer`), the fallback when the op cannot load.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence, Tuple, Union

import paddle
import paddle.nn.functional as F

from .custom_op_build import CompiledOp
from .psa_args import OP_DTYPES, cpu_copy_dtype, dtype_name, mask_hw, psa_type_id

__all__ = [
    "psa_attention",
    "psa_attention_reference",
    "build_attention_op",
    "load_attention_op_library",
    "is_attention_op_available",
    "ATTENTION_OP_NAME",
]

#: Name the op is registered under (``PD_BUILD_OP(psa_attention)``).
ATTENTION_OP_NAME = "psa_attention"
_BUILD_HINT = (
    "Build it ahead of time with `python -m paddleseg_ext.ops.build` (needs a "
    "C++ compiler, plus nvcc for CUDA), or select the pure-Paddle path with "
    "impl='paddle'."
)

_OP = CompiledOp(
    ATTENTION_OP_NAME, "psa_attention", cpu_sources=["psa_attention.cc"],
    cuda_sources=["psa_attention.cu"],
    headers=["psa_mask/psa_mask_common.h", "common/cpu_parallel.h", "common/op_dtypes.h",
             "common/kernel_support.h", "common/cuda_dtype_dispatch.h",
             "psa_attention/psa_attention_common.h", "psa_attention/psa_attention_cpu.h",
             "psa_attention/psa_attention_cuda.h", "psa_attention/psa_attention_kernels.cuh"],
    build_hint=_BUILD_HINT)

PsaType = Union[str, int]


def build_attention_op(verbose: bool = False) -> Path:
    """Build (if not cached) and load the compiled op; return the ``.so`` path.

    Raises:
        RuntimeError: If the build fails.
    """
    return _OP.build(verbose)


def load_attention_op_library(build: bool = True) -> Tuple[ModuleType, str]:
    """Register the compiled op in this process; ``(module, so_path)``.

    The module exposes ``psa_attention(x, mask_logits, psa_type, mask_h,
    mask_w, softmax) -> [out, lse]`` (``out`` not divided by the
    normalization factor).

    Raises:
        RuntimeError: If the op can be neither loaded nor built.
    """
    return _OP.load_library(build)


def is_attention_op_available(build: bool = False) -> bool:
    """Whether the compiled op is (or, with ``build``, can be) loaded."""
    return _OP.available(build)


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


def _mask_size_of(mask_logits: paddle.Tensor, mask_size) -> Tuple[int, int]:
    if mask_size is not None:
        return mask_hw(mask_size, "psa_attention")
    channels = mask_logits.shape[1] if len(mask_logits.shape) == 4 else None
    side = math.isqrt(channels) if isinstance(channels, int) and channels > 0 else 0
    if side * side != channels:
        raise ValueError(
            f"psa_attention: mask_size not given and mask_logits' {channels} channels are not "
            "a square number; pass mask_size=(mask_h, mask_w).")
    return side, side


def _check_inputs(x: paddle.Tensor, a: paddle.Tensor, mh: int, mw: int) -> None:
    xs, as_ = list(x.shape), list(a.shape)
    if len(xs) != 4:
        raise ValueError(f"psa_attention: x must be 4-D [N, C, H, W], got shape {xs}.")
    if len(as_) != 4:
        raise ValueError("psa_attention: mask_logits must be 4-D [N, mask_h*mask_w, H, W], "
                         f"got shape {as_}.")

    def known(v) -> bool:  # -1/None: unknown while tracing; the kernel checks again
        return v is not None and v >= 0

    if known(as_[1]) and as_[1] != mh * mw:
        raise ValueError(f"psa_attention: mask_logits has {as_[1]} channels but mask_size "
                         f"({mh}, {mw}) needs mask_h*mask_w = {mh * mw}.")
    for d, name in ((0, "N"), (2, "H"), (3, "W")):
        if known(xs[d]) and known(as_[d]) and xs[d] != as_[d]:
            raise ValueError(f"psa_attention: x {xs} and mask_logits {as_} differ in {name}.")
    if x.dtype != a.dtype:
        raise ValueError(f"psa_attention: x is {dtype_name(x)} but mask_logits is "
                         f"{dtype_name(a)}; use one dtype.")


def _check_norm(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"psa_attention: normalization_factor must be a positive number, got {value!r}.")
    return float(value)


# --------------------------------------------------------------------------
# Pure-Paddle implementation: chunked over columns
# --------------------------------------------------------------------------

_CHUNK_CACHE: dict = {}
_CHUNK_CACHE_MAX = 64
# Index maps are cached only for small maps (all chunks together are [P, P]).
_CACHE_MAX_ENTRIES = 1 << 22


def _chunk_index(h: int, w: int, mh: int, mw: int, type_id: int, q0: int, q1: int,
                 place) -> paddle.Tensor:
    """Flat indices into ``[mh*mw*P + 1]`` logits (last = a zero) for the map's
    columns ``[q0, q1)``: ``[P, q1 - q0]``, as :func:`psa_mask`'s index map."""
    key = (h, w, mh, mw, type_id, q0, q1, str(place))
    index = _CHUNK_CACHE.get(key)
    if index is None:
        plane, cells = h * w, mh * mw
        with paddle.no_grad():
            rows = paddle.arange(0, plane, dtype="int64").unsqueeze(1)
            cols = paddle.arange(q0, q1, dtype="int64").unsqueeze(0)
            # collect: row = target t, column = source p; distribute: the reverse.
            t, p = (rows, cols) if type_id == 0 else (cols, rows)
            i = t // w - p // w + (mh - 1) // 2
            j = t % w - p % w + (mw - 1) // 2
            used = ((i >= 0) & (i < mh) & (j >= 0) & (j < mw)).astype("int64")
            index = ((i * mw + j) * plane + p - cells * plane) * used + cells * plane
        if plane * plane > _CACHE_MAX_ENTRIES:  # all chunks cached would be [P, P]
            return index
        if len(_CHUNK_CACHE) >= _CHUNK_CACHE_MAX:
            _CHUNK_CACHE.pop(next(iter(_CHUNK_CACHE)))
        _CHUNK_CACHE[key] = index
    return index


def _chunks(plane: int, chunk: int):
    return [(q0, min(plane, q0 + chunk)) for q0 in range(0, plane, chunk)]


def _chunk_weights(a_ext: paddle.Tensor, index: paddle.Tensor, softmax: bool) -> paddle.Tensor:
    """``[N, P, Q]`` column slice of ``softmax(psa_mask(a), axis=1)`` (or of the map)."""
    n = a_ext.shape[0]
    plane, q = index.shape
    logits = paddle.gather(a_ext, index.reshape([-1]), axis=1).reshape([n, plane, q])
    return F.softmax(logits, axis=1) if softmax else logits


class _ChunkedAttention(paddle.autograd.PyLayer):
    """Forward and backward one column chunk at a time; nothing ``[P, P]`` is kept."""

    @staticmethod
    def forward(ctx, x, a, type_id: int, mh: int, mw: int, softmax: bool, chunk: int):
        n, c, h, w = x.shape
        plane = h * w
        a_ext = paddle.concat([a.reshape([n, -1]), paddle.zeros([n, 1], a.dtype)], axis=1)
        x_flat = x.reshape([n, c, plane])
        outs = []
        for q0, q1 in _chunks(plane, chunk):
            index = _chunk_index(h, w, mh, mw, type_id, q0, q1, x.place)
            outs.append(paddle.bmm(x_flat, _chunk_weights(a_ext, index, softmax)))
        ctx.save_for_backward(x, a)
        ctx.attrs = (type_id, mh, mw, softmax, chunk)
        return paddle.concat(outs, axis=2).reshape([n, c, h, w])

    @staticmethod
    def backward(ctx, dout):
        x, a = ctx.saved_tensor()
        type_id, mh, mw, softmax, chunk = ctx.attrs
        n, c, h, w = x.shape
        plane = h * w
        a_ext = paddle.concat([a.reshape([n, -1]), paddle.zeros([n, 1], a.dtype)], axis=1)
        x_flat = x.reshape([n, c, plane])
        g = dout.reshape([n, c, plane])
        dx = paddle.zeros([n, c, plane], x.dtype)
        da_ext = paddle.zeros([n, mh * mw * plane + 1], a.dtype)
        for q0, q1 in _chunks(plane, chunk):
            index = _chunk_index(h, w, mh, mw, type_id, q0, q1, x.place)
            weights = _chunk_weights(a_ext, index, softmax)  # [N, P, Q]
            g_chunk = g[:, :, q0:q1]
            dx = dx + paddle.bmm(g_chunk, weights.transpose([0, 2, 1]))
            dw = paddle.bmm(x_flat.transpose([0, 2, 1]), g_chunk)  # [N, P, Q]
            if softmax:
                dw = weights * (dw - (weights * dw).sum(axis=1, keepdim=True))
            # Every used logit feeds exactly one map entry; the zero entries all
            # point at the last slot, which is dropped.
            flat_index = index.reshape([1, -1]).expand([n, plane * (q1 - q0)])
            da_ext = paddle.put_along_axis(da_ext, flat_index, dw.reshape([n, -1]), axis=1,
                                           reduce="add")
        return dx.reshape([n, c, h, w]), da_ext[:, :-1].reshape(a.shape)


def _unfused(x, a, type_id, mh, mw, softmax):
    """The composition the op replaces (for traced programs: static shapes unknown)."""
    from .psa_mask import psa_mask_reference

    shape = paddle.shape(x)
    n, c, plane = shape[0], shape[1], shape[2] * shape[3]
    y = psa_mask_reference(a, type_id, (mh, mw)).reshape(paddle.stack([n, plane, plane]))
    if softmax:
        y = F.softmax(y, axis=1)
    return paddle.bmm(x.reshape(paddle.stack([n, c, plane])), y).reshape(shape)


@paddle.jit.marker.unified
def psa_attention_reference(x: paddle.Tensor, mask_logits: paddle.Tensor, psa_type: PsaType,
                            normalization_factor: float = 1.0, softmax: bool = True,
                            mask_size: Optional[Sequence[int]] = None,
                            chunk_columns: Optional[int] = None) -> paddle.Tensor:
    """Fused PSA attention in pure Paddle ops, chunked over the map's columns.

    Forward and backward build ``[N, P, chunk]`` slices of the attention map
    only (``chunk`` = ``chunk_columns``, default ``min(P, max(64, mh*mw))``,
    so memory stays ``O(N * P * (C + mh*mw))``); the backward recomputes each
    slice instead of keeping it. In a traced program (``paddle.jit.to_static``)
    it is the unfused composition, which exports to ONNX. Semantics as in
    :func:`psa_attention`.

    Raises:
        ValueError: On bad arguments or input shapes.
    """
    type_id = psa_type_id(psa_type, "psa_attention")
    mh, mw = _mask_size_of(mask_logits, mask_size)
    _check_inputs(x, mask_logits, mh, mw)
    norm = _check_norm(normalization_factor)
    if not paddle.in_dynamic_mode():
        out = _unfused(x, mask_logits, type_id, mh, mw, bool(softmax))
    else:
        plane = int(x.shape[2]) * int(x.shape[3])
        chunk = chunk_columns or min(plane, max(64, mh * mw))
        if chunk < 1:
            raise ValueError(f"psa_attention: chunk_columns must be >= 1, got {chunk_columns!r}.")
        out = _ChunkedAttention.apply(x, mask_logits, type_id, mh, mw, bool(softmax),
                                      min(int(chunk), max(plane, 1)))
    return out * (1.0 / norm) if norm != 1.0 else out


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def _fallback_warning() -> None:
    if _OP.take_warning():
        warnings.warn(
            f"psa_attention: the compiled op is unavailable ({_OP.state['reason'] or 'unknown'});"
            f" using the chunked pure-Paddle implementation. {_BUILD_HINT}",
            RuntimeWarning, stacklevel=3)


@paddle.jit.marker.unified
def psa_attention(x: paddle.Tensor, mask_logits: paddle.Tensor, psa_type: PsaType,
                  normalization_factor: float = 1.0, softmax: bool = True,
                  mask_size: Optional[Sequence[int]] = None,
                  impl: Optional[str] = None) -> paddle.Tensor:
    """PSA collect/distribute attention without the ``[H*W, H*W]`` map (PSANet).

    Equals ``bmm(x, softmax(psa_mask(mask_logits), axis=1)) / normalization_factor``
    in value and gradients (see the module docstring for the closed form);
    https://hszhao.github.io/papers/eccv18_psanet.pdf.

    Args:
        x: ``[N, C, H, W]`` float32/float64/float16/bfloat16 features (the
            GPU kernels compute 16-bit inputs in float32; an op built without
            CUDA kernels runs them on a float32 copy).
        mask_logits: ``[N, mask_h*mask_w, H, W]`` window logits, ``x``'s dtype.
        psa_type: ``'collect'``/``0`` or ``'distribute'``/``1``.
        normalization_factor: the result is divided by it (> 0).
        softmax: softmax over the source positions of every column.
        mask_size: ``(mask_h, mask_w)``; default: a square mask from the
            channels. Odd, even and larger-than-the-map masks are fine.
        impl: ``'op'`` (compiled), ``'paddle'`` (chunked pure Paddle) or
            ``'auto'`` (the op if it can be loaded or built, else pure Paddle
            with one warning); default ``$PADDLESEG_EXT_PSA_IMPL`` if it is one
            of these, else ``'auto'``.

    Returns:
        ``[N, C, H, W]`` tensor of ``x``'s dtype.

    Raises:
        ValueError: Bad arguments or input shapes.
        RuntimeError: ``impl='op'`` and the compiled op is unavailable.
    """
    type_id = psa_type_id(psa_type, "psa_attention")
    mh, mw = _mask_size_of(mask_logits, mask_size)
    _check_inputs(x, mask_logits, mh, mw)
    norm = _check_norm(normalization_factor)
    if impl is None:
        from paddleseg_ext.runtime.policy import current_policy

        mode = current_policy().psa_impl
        mode = mode if mode in ("op", "paddle") else "auto"
    else:
        mode = str(impl).strip().lower()
    if mode not in ("op", "paddle", "auto"):
        raise ValueError(f"psa_attention: impl must be 'op', 'paddle' or 'auto', got {impl!r}.")
    dtype_ok = dtype_name(x) in OP_DTYPES
    module = None
    if mode == "op":
        if not dtype_ok:
            raise ValueError(f"psa_attention: the compiled op supports {OP_DTYPES}, got "
                             f"{dtype_name(x)}; use impl='paddle'.")
        module = load_attention_op_library(build=False)[0]
    elif mode == "auto" and dtype_ok:
        module = _OP.get(allow_build=False)
        if module is None:
            _fallback_warning()
    if module is None:
        return psa_attention_reference(x, mask_logits, type_id, norm, softmax, (mh, mw))
    wide = cpu_copy_dtype(x)  # 16-bit without CUDA kernels: the CPU kernels take float32
    if wide is None:
        out, _ = module.psa_attention(x, mask_logits, type_id, mh, mw, bool(softmax))
    else:
        out, _ = module.psa_attention(x.astype(wide), mask_logits.astype(wide), type_id, mh, mw,
                                      bool(softmax))
        out = out.astype(x.dtype)
    return out * (1.0 / norm) if norm != 1.0 else out
