"""Errors raised for bad user input (configs, data), and how the tools report them.

The command-line tools run their ``main`` through :func:`run_cli`: an error a
user can fix (a bad config, a missing or broken data file, a wrong value)
prints one ``error: <message>`` paragraph to stderr and exits with status 2;
a fault during a run (NaN loss, out of memory, a full disk) exits with 1; an
interrupt exits with 130. Set ``PADDLESEG_EXT_DEBUG=1`` to get the full
traceback instead.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

DEBUG_ENV = "PADDLESEG_EXT_DEBUG"


class ConfigError(ValueError):
    """A config is wrong: the message says what, where (file, key) and what is allowed."""


#: Exceptions caused by what the user gave us (exit status 2).
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
#: Faults during a run that have a clear message (exit status 1).
RUN_ERRORS = (FloatingPointError, MemoryError, OSError)

_WORKER_PREFIX = re.compile(r"^DataLoader worker\(\d+\) caught (\w+) with message:\n", re.S)


def clean_worker_message(text: str) -> str:
    """The original message of an exception re-raised by a Paddle DataLoader worker.

    Paddle re-raises a worker's exception in the main process as
    ``Type("DataLoader worker(0) caught Type with message:\\n<whole traceback>")``;
    this returns just the message of the last exception in that traceback.
    Other text is returned unchanged.
    """
    m = _WORKER_PREFIX.match(text)
    if not m:
        return text
    name, body = m.group(1), text[m.end():].rstrip("\n")
    # The traceback ends with "<module.>Name: message" (the message may span lines).
    hits = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(name)}: ", body, re.M))
    if not hits:
        return body.strip().splitlines()[-1] if body.strip() else text
    return body[hits[-1].end():].strip()


def clean_exception(e: BaseException) -> BaseException:
    """``e`` with a DataLoader-worker traceback stripped from its message (same type if possible)."""
    text = str(e)
    clean = clean_worker_message(text)
    if clean == text:
        return e
    try:
        new = type(e)(clean)
    except Exception:  # exception types with special constructors
        return e
    new.__cause__ = e.__cause__
    return new


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
    """
    stream = stream or sys.stderr
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "False")
    try:
        rv = main(argv)
    except (KeyboardInterrupt, Exception) as e:  # noqa: B902 - classified below
        code = exit_code(e)
        if debug or code is None:
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
