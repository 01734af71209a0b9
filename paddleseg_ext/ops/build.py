"""Build the compiled custom ops ahead of time.

Usage::

    python -m paddleseg_ext.ops.build [--verbose]

Compiles every custom op of the package (the PSA mask op and the fused PSA
attention op of PSANet, Zhao et al., ECCV 2018,
https://hszhao.github.io/papers/eccv18_psanet.pdf) into the per-user cache
(``$PADDLESEG_EXT_OP_CACHE`` or ``~/.cache/paddleseg_ext/ops``) and prints the
path of the shared library, so later imports never compile. Safe to run while
other processes build or load the same op (a file lock serialises builds).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        Process exit code: 0 on success, 1 if the build failed.
    """
    parser = argparse.ArgumentParser(
        prog="python -m paddleseg_ext.ops.build",
        description="Build paddleseg_ext custom ops into the per-user cache.",
    )
    parser.add_argument("--verbose", action="store_true", help="show compiler output")
    args = parser.parse_args(argv)

    import paddleseg_ext.ops  # noqa: F401 - defines the ops
    from paddleseg_ext.ops.custom_op_build import op_cache_dir, registered_ops

    status = 0
    for op in registered_ops():
        try:
            so_path = op.build(verbose=args.verbose)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"built op '{op.op_name}': {so_path}")
    print(f"cache root: {op_cache_dir()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
