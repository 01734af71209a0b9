"""Batch-norm selection shared by every model.

``nn.SyncBatchNorm`` is what multi-GPU segmentation training wants (per-GPU
batches are tiny, 2-4 crops), but Paddle's SyncBatchNorm has no CPU kernel, so
on CPU (tests, export, CPU inference) plain ``BatchNorm2D`` is used. Both keep
the same parameter/buffer names (``weight, bias, _mean, _variance``), so
checkpoints move freely between the two.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn


def use_sync_bn() -> bool:
    """True when the current device is a GPU, where SyncBatchNorm works."""
    return paddle.is_compiled_with_cuda() and paddle.get_device().startswith("gpu")


def SyncBatchNorm(num_features: int, momentum: float = 0.9, epsilon: float = 1e-5,
                  data_format: str = "NCHW") -> nn.Layer:  # noqa: N802 (layer-like factory)
    """A batch-norm layer: ``nn.SyncBatchNorm`` on GPU, ``nn.BatchNorm2D`` otherwise.

    Args:
        num_features: number of channels C of the ``[N, C, H, W]`` input.
        momentum: Paddle's running-stat momentum (0.9 == PyTorch's 0.1).
        epsilon: added to the variance for numerical stability.
        data_format: ``"NCHW"`` or ``"NHWC"``.

    Returns:
        The batch-norm layer chosen for the current device.
    """
    cls = nn.SyncBatchNorm if use_sync_bn() else nn.BatchNorm2D
    return cls(num_features, momentum=momentum, epsilon=epsilon, data_format=data_format)
