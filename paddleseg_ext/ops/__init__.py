"""Custom operators of paddleseg_ext.

Nothing is compiled at import time: the compiled PSA mask op is built or
loaded on first use (or ahead of time with ``python -m paddleseg_ext.ops.build``).
"""

from .psa_mask import (  # noqa: F401
    OP_NAME,
    build_op,
    is_compiled_op_available,
    load_op_library,
    op_cache_dir,
    psa_mask,
    psa_mask_reference,
)

__all__ = [
    "OP_NAME",
    "build_op",
    "is_compiled_op_available",
    "load_op_library",
    "op_cache_dir",
    "psa_mask",
    "psa_mask_reference",
]
