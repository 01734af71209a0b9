"""Run-time set-up shared by the command-line tools: device, threads, seeds, execution policy."""

from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np

from .logger import get_logger, set_threads


def seed_everything(seed: int) -> None:
    """Seed paddle, numpy and python ``random`` (workers are seeded per sample by the trainer)."""
    import paddle

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


_threads: Optional[int] = None  # the CPU threads setup_device chose


def setup_device(device: str = "auto", num_threads: Optional[int] = None) -> str:
    """Select ``cpu`` / ``gpu`` (``auto``: GPU when Paddle has CUDA and sees one); on CPU use all cores."""
    import paddle

    global _threads
    if device == "auto":
        device = "gpu" if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else "cpu"
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise ValueError("--device gpu needs paddlepaddle-gpu; this Paddle is a CPU build (use --device cpu)")
    paddle.set_device(device)
    if device == "cpu":
        _threads = set_threads(num_threads)
        get_logger().debug("CPU threads: %d", _threads)
    else:  # reproducible cuDNN algorithms; set through Paddle, which reads the flag at start-up
        paddle.set_flags({"FLAGS_cudnn_deterministic": True})
    return device


def tool_policy(target: str, builder: Any = None, **flags: Any):
    """The execution policy of one tool run: the environment, then the config's execution
    choices (``builder.policy_overrides``), then the tool's flags (None = not given); the
    threads :func:`setup_device` chose. Logged as one line.

    Raises:
        ValueError: a bad value in the environment, config or flags (names which).
    """
    from ..runtime import policy_from_environment

    overrides = dict(builder.policy_overrides) if builder is not None else {}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if _threads is not None:
        overrides.setdefault("threads", _threads)
    policy = policy_from_environment(target=target, **overrides)
    get_logger().info("execution policy: %s", policy.describe())
    return policy
