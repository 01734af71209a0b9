"""Paddle messages known to be harmless, silenced narrowly: one exact message each.

Nothing else is filtered: the user's own warnings, other Paddle warnings and
real errors still show. Each entry says why it is harmless.

* ``No ccache found`` (``import paddle``: ``paddle.utils`` imports its C++
  extension builder, which looks for a compiler cache). Only compiling a
  custom op could use ccache; the PSA op is built once and cached per user.
* ``When training, we now always track global mean and variance``
  (``BatchNorm2D.forward`` in training mode, every time). A note about
  Paddle's own behaviour, not about the call.
* ``Paddle static graph(PIR) not support input out tensor for now!!!!!``
  (a C++ glog warning while ``paddle.jit.to_static`` traces a model):
  Paddle's own functions (e.g. ``F.softmax``) pass ``out=None`` to their
  kernels; the saved program is complete (export parity tests).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from typing import Iterator, Sequence

#: (message regex, module regex) of Python warnings raised while ``import paddle`` runs.
IMPORT_WARNINGS = ((r"No ccache found", r"paddle\.utils\.cpp_extension\.extension_utils"),)
#: (message regex, module regex) of Python warnings raised during a run.
RUN_WARNINGS = ((r"When training, we now always track global mean and variance", r"paddle\.nn\.layer\.norm"),)
#: Regexes of lines Paddle's C++ code writes to stderr while tracing for export.
TRACE_STDERR_LINES = (r"Paddle static graph\(PIR\) not support input out tensor for now",)


def ignore_import_warnings() -> None:
    """Ignore :data:`IMPORT_WARNINGS` (call before the first ``import paddle``)."""
    for message, module in IMPORT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)


@contextlib.contextmanager
def quiet_run_warnings() -> Iterator[None]:
    """Ignore :data:`RUN_WARNINGS` inside the block (a tool's ``main``)."""
    with warnings.catch_warnings():
        for message, module in RUN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)
        yield


@contextlib.contextmanager
def filter_native_stderr(patterns: Sequence[str] = TRACE_STDERR_LINES) -> Iterator[None]:
    """Drop stderr lines matching ``patterns`` written inside the block, by Python or C++ code.

    File descriptor 2 goes to a temporary file for the block; afterwards (also on
    an exception) every other line is written to the real stderr, in order.
    """
    regex = re.compile("|".join(f"(?:{p})" for p in patterns))
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True)
                    if not regex.search(line.decode("utf-8", "replace"))]
            if kept:
                os.write(2, b"".join(kept))
