"""How the command-line tools report errors: one paragraph and an exit status, no traceback.

Every tool (``tools/*.py``, ``deploy/python/*.py``) runs its ``main`` through
:func:`run_cli`: an error a user can fix (a bad config, a missing or broken
data file, a wrong value, a missing optional package) prints one
``error: <message>`` paragraph to stderr and exits with status 2; a fault
during a run (NaN loss, out of memory, a full disk, a failed deployment step)
exits with 1; an interrupt exits with 130. Set ``PADDLESEG_EXT_DEBUG=1`` to
get the full traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Sequence

from ..cvlibs.errors import DeploymentError, MissingDependencyError, clean_worker_message
from .quiet import quiet_run_warnings

DEBUG_ENV = "PADDLESEG_EXT_DEBUG"

#: Exceptions caused by what the user gave us (exit status 2).
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, MissingDependencyError)
#: Faults during a run that have a clear message (exit status 1).
RUN_ERRORS = (FloatingPointError, MemoryError, OSError, DeploymentError)


def debug_enabled() -> bool:
    """True when ``PADDLESEG_EXT_DEBUG`` asks for tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "False")


def user_message(e: BaseException) -> str:
    """The text shown to the user for ``e``: its message, worker tracebacks removed."""
    msg = clean_worker_message(str(e)).strip()
    if isinstance(e, KeyError) and len(e.args) == 1:
        msg = str(e.args[0])
    if not msg:
        msg = type(e).__name__
    return msg


def exit_code(e: BaseException) -> Optional[int]:
    """Exit status for an exception shown without traceback, or None (a bug: show it)."""
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, INPUT_ERRORS):
        return 2
    if isinstance(e, RUN_ERRORS):
        return 1
    return None


def run_cli(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None,
            stream=None) -> int:
    """Run a tool's ``main(argv)``; print user errors as one paragraph; return the exit status.

    ``main`` may return an int (its exit status); anything else counts as 0.
    With ``PADDLESEG_EXT_DEBUG=1`` exceptions propagate with their traceback.
    Paddle warnings known to be harmless are not shown (:mod:`paddleseg_ext.utils.quiet`).
    """
    stream = stream or sys.stderr
    try:
        with quiet_run_warnings():
            rv = main(argv)
    except (KeyboardInterrupt, Exception) as e:  # noqa: B902 - classified below
        code = exit_code(e)
        if debug_enabled() or code is None:
            raise
        if isinstance(e, KeyboardInterrupt):
            print("error: interrupted", file=stream)
        else:
            print(f"error: {user_message(e)}\n(set {DEBUG_ENV}=1 to see the traceback)", file=stream)
        stream.flush()
        return code
    if isinstance(rv, int) and not isinstance(rv, bool):
        return rv
    return 0
