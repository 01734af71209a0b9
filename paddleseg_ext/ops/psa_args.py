"""Arguments the PSA ops share: direction, mask size and the dtypes their kernels take.

One home for what :func:`~paddleseg_ext.ops.psa_mask` and
:func:`~paddleseg_ext.ops.psa_attention` check the same way, so their messages agree.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import paddle

from .custom_op_build import want_cuda

__all__ = ["PSA_DIRECTIONS", "OP_DTYPES", "HALF_DTYPES", "PsaType", "MaskSize",
           "psa_type_id", "mask_hw", "dtype_name", "cpu_copy_dtype"]

#: Directions the kernels take (bi-direction is two calls).
PSA_DIRECTIONS = {"collect": 0, "distribute": 1}
#: Dtypes the compiled ops take.
OP_DTYPES = ("float32", "float64", "float16", "bfloat16")
#: The GPU kernels take these as they are (computing in float32); the CPU kernels take
#: float32/float64, so an op built without CUDA kernels runs them on a float32 copy.
HALF_DTYPES = ("float16", "bfloat16")

PsaType = Union[str, int]
MaskSize = Union[int, Sequence[int]]


def psa_type_id(psa_type: PsaType, op: str = "psa_mask") -> int:
    """``'collect' | 'distribute'`` (any case) or ``0 | 1`` -> 0/1.

    Raises:
        ValueError: any other value (bools included), naming ``op``.
    """
    if isinstance(psa_type, str) and psa_type.lower() in PSA_DIRECTIONS:
        return PSA_DIRECTIONS[psa_type.lower()]
    if not isinstance(psa_type, bool) and isinstance(psa_type, int) and psa_type in (0, 1):
        return int(psa_type)
    raise ValueError(f"{op}: psa_type must be 'collect' (0) or 'distribute' (1), got {psa_type!r}.")


def mask_hw(mask_size: MaskSize, op: str = "psa_mask") -> Tuple[int, int]:
    """``(mask_h, mask_w)`` from an int or a pair of positive ints.

    Raises:
        ValueError: anything else, naming ``op``.
    """
    if isinstance(mask_size, int) and not isinstance(mask_size, bool):
        mask_size = (mask_size, mask_size)
    try:
        mh, mw = (int(v) for v in mask_size)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: mask_size must be (mask_h, mask_w), got {mask_size!r}.") from None
    if mh < 1 or mw < 1:
        raise ValueError(f"{op}: mask_size must be positive, got ({mh}, {mw}).")
    return mh, mw


def dtype_name(x: paddle.Tensor) -> str:
    """``'float32'`` for a float32 tensor (without Paddle's ``paddle.`` prefix)."""
    return str(x.dtype).replace("paddle.", "")


def cpu_copy_dtype(x: paddle.Tensor) -> Optional[str]:
    """``'float32'`` when a compiled op must run ``x`` on a float32 copy: a 16-bit tensor and
    ops built without CUDA kernels (the CPU kernels take float32/float64), else None."""
    return "float32" if dtype_name(x) in HALF_DTYPES and not want_cuda() else None
