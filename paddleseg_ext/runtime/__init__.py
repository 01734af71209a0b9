"""How models run: one execution policy and the rewrites that apply it.

``policy`` holds :class:`ExecutionPolicy` (built once at a tool's start, the one reader of the
package's environment variables); ``rewrites`` the registry and :func:`prepare`; ``forms`` the
faster and export-specific forms of the paper layers and their registered rewrites.
"""

from .policy import (ENV, PSA_IMPLS, TARGETS, ExecutionPolicy, current_policy,  # noqa: F401
                     policy_from_environment, use_policy)
from .rewrites import (Rewrite, applied_rewrites, prepare, register_rewrite,  # noqa: F401
                       registered_rewrites, to_form, to_plain)

__all__ = ["ENV", "PSA_IMPLS", "TARGETS", "ExecutionPolicy", "current_policy",
           "policy_from_environment", "use_policy", "Rewrite", "applied_rewrites", "prepare",
           "register_rewrite", "registered_rewrites", "to_form", "to_plain"]
