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


def inference_in_place() -> bool:
    """True in eager mode with gradients off: no autograd graph needs a layer's
    input kept, so inference may overwrite activations instead of copying."""
    return paddle.in_dynamic_mode() and not paddle.is_grad_enabled()


def batch_norm_eval_(x: paddle.Tensor, bn: nn.Layer) -> paddle.Tensor:
    """Eval-mode batch norm of ``x`` written into ``x`` (no second full-size tensor).

    ``y = x * s + t`` with ``s = weight / sqrt(var + eps)`` and ``t = bias -
    mean * s``, the fold Paddle's CPU inference kernel also uses (Ioffe &
    Szegedy, ICML 2015, https://arxiv.org/abs/1502.03167, Alg. 2), so values
    agree to float rounding. Falls back to ``bn(x)`` unless ``bn`` is an
    eval ``BatchNorm2D`` on NCHW with an affine weight and bias, and no
    autograd graph is being built.

    Args:
        x: ``[N, C, H, W]``, overwritten when the in-place path applies.
        bn: the batch-norm layer whose statistics and affine terms to use.

    Returns:
        The normalised tensor (``x`` itself on the in-place path).
    """
    if (not inference_in_place() or type(bn) is not nn.BatchNorm2D or bn.training
            or bn._use_global_stats is False or bn._data_format != "NCHW"
            or bn.weight is None or bn.bias is None):
        return bn(x)
    scale = bn.weight * paddle.rsqrt(bn._variance + bn._epsilon)
    shift = bn.bias - bn._mean * scale
    return x.multiply_(scale.reshape([1, -1, 1, 1])).add_(shift.reshape([1, -1, 1, 1]))
