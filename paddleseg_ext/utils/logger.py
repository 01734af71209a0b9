"""One logger for the toolkit; only rank 0 prints in distributed runs."""

from __future__ import annotations

import logging
import os
import sys

_NAME = "paddleseg_ext"


def rank() -> int:
    return int(os.environ.get("PADDLE_TRAINER_ID", os.environ.get("PADDLE_RANK_IN_NODE", 0)) or 0)


def get_logger() -> logging.Logger:
    """The toolkit logger (configured on first use)."""
    log = logging.getLogger(_NAME)
    if not getattr(log, "_configured", False):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO if rank() == 0 else logging.ERROR)
        log.propagate = False
        log._configured = True
    return log


def set_threads(num_threads: int | None = None) -> int:
    """Use all cores on CPU unless told otherwise (Paddle defaults to one thread).

    The execution policy's ``threads`` (``CPU_NUM_THREADS`` in the environment) overrides
    the default.
    """
    from paddle.base import core

    from ..runtime.policy import current_policy

    n = num_threads or current_policy().threads or (os.cpu_count() or 1)
    core.set_num_threads(int(n))  # MKL / oneDNN / OpenMP threads of the CPU kernels
    return n
