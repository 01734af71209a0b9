"""Run-time set-up shared by the command-line tools: device, threads, seeds."""

from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np

from .logger import get_logger, set_threads


def seed_everything(seed: int) -> None:
    """Seed paddle, numpy and python ``random`` (workers are seeded per sample by the trainer)."""
    import paddle

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


def setup_device(device: str = "auto", num_threads: Optional[int] = None) -> str:
    """Select ``cpu`` / ``gpu`` (``auto``: GPU when Paddle has CUDA and sees one); on CPU use all cores."""
    import paddle

    if device == "auto":
        device = "gpu" if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else "cpu"
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise ValueError("--device gpu needs paddlepaddle-gpu; this Paddle is a CPU build (use --device cpu)")
    paddle.set_device(device)
    if device == "cpu":
        n = set_threads(num_threads)
        get_logger().debug("CPU threads: %d", n)
    os.environ.setdefault("FLAGS_cudnn_deterministic", "True")
    return device
