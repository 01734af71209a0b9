"""Errors raised for bad user input (configs, data, deployment), and their messages cleaned.

How the tools report them (one paragraph, an exit status) is :mod:`paddleseg_ext.utils.cli`.
"""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A config is wrong: the message says what, where (file, key) and what is allowed."""


class MissingDependencyError(ImportError):
    """An optional dependency (paddle2onnx, onnxruntime) is not installed (exit status 2)."""


class DeploymentError(RuntimeError):
    """A deployment step failed for a reason the message explains (exit status 1, no traceback)."""


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
