"""Custom operators of paddleseg_ext.

Nothing is compiled at import time: the compiled ops (PSA mask, fused PSA
attention, Winograd tile transforms) are built or loaded on first use, or ahead of time with
``python -m paddleseg_ext.ops.build``. ``custom_op_build`` is the one home of
the build/cache/lock machinery.
"""

# psa_mask first: the ops register (and `python -m paddleseg_ext.ops.build` builds them) in
# import order, the mask op before the attention op that extends it.
from .psa_mask import (  # noqa: F401
    OP_NAME,
    build_op,
    is_compiled_op_available,
    load_op_library,
    op_cache_dir,
    psa_mask,
    psa_mask_reference,
)
from .psa_attention import (  # noqa: F401
    ATTENTION_OP_NAME,
    build_attention_op,
    is_attention_op_available,
    load_attention_op_library,
    psa_attention,
    psa_attention_reference,
)
from .winograd import is_winograd_available, winograd_conv3x3  # noqa: F401

__all__ = [
    "ATTENTION_OP_NAME",
    "OP_NAME",
    "build_attention_op",
    "build_op",
    "is_attention_op_available",
    "is_compiled_op_available",
    "load_attention_op_library",
    "load_op_library",
    "op_cache_dir",
    "psa_attention",
    "psa_attention_reference",
    "psa_mask",
    "psa_mask_reference",
    "is_winograd_available",
    "winograd_conv3x3",
]
