"""Build the compiled custom ops ahead of time.

Usage::

    python -m paddleseg_ext.ops.build [--verbose]

Compiles the PSA mask op (PSANet, Zhao et al., ECCV 2018,
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

    from paddleseg_ext.ops.psa_mask import OP_NAME, build_op, op_cache_dir

    try:
        so_path = build_op(verbose=args.verbose)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"built op '{OP_NAME}': {so_path}")
    print(f"cache root: {op_cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
