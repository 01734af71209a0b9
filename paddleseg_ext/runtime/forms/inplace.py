"""In-place inference: batch norm and ReLU written into the convolution's own output.

Inference builds no autograd graph, so nothing needs a layer's input kept: the eval batch
norm after a convolution and the ReLU after it can overwrite the convolution's fresh output
instead of allocating two more feature maps of the same size (at PSANet's 4096-channel
bottleneck on a large image, gigabytes). The values are those of the plain layers up to
float rounding (the batch norm is applied as the fold Paddle's CPU kernel also uses).
"""

from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...models.backbones.resnet_vd import ResidualBlock
from ...models.layers.conv_bn import ConvBN, ConvBNReLU

__all__ = ["batch_norm_eval_", "InPlaceConvBN", "InPlaceConvBNReLU", "InPlaceResidualBlock"]


def batch_norm_eval_(x: paddle.Tensor, bn: nn.Layer) -> paddle.Tensor:
    """Eval-mode batch norm of ``x`` written into ``x`` (no second full-size tensor).

    ``y = x * s + t`` with ``s = weight / sqrt(var + eps)`` and ``t = bias - mean * s``
    (Ioffe & Szegedy, ICML 2015, https://arxiv.org/abs/1502.03167, Alg. 2), the fold
    Paddle's CPU inference kernel uses, so values agree to float rounding. Falls back to
    ``bn(x)`` unless ``bn`` is an eval ``BatchNorm2D`` on NCHW with an affine weight and bias
    (after BatchNorm folding it is an ``nn.Identity`` and returns ``x``).

    Args:
        x: ``[N, C, H, W]``, overwritten when the in-place path applies.
        bn: the batch-norm layer whose statistics and affine terms to use.

    Returns:
        The normalised tensor (``x`` itself on the in-place path).
    """
    if (type(bn) is not nn.BatchNorm2D or bn.training or bn._use_global_stats is False
            or bn._data_format != "NCHW" or bn.weight is None or bn.bias is None):
        return bn(x)
    scale = bn.weight * paddle.rsqrt(bn._variance + bn._epsilon)
    shift = bn.bias - bn._mean * scale
    return x.multiply_(scale.reshape([1, -1, 1, 1])).add_(shift.reshape([1, -1, 1, 1]))


class InPlaceConvBN(ConvBN):
    """Inference form of :class:`ConvBN`: the batch norm works in the conv output's buffer."""

    plain_class = ConvBN

    def after_conv(self, y: paddle.Tensor) -> paddle.Tensor:
        # y is this layer's own fresh conv output, so overwriting it is safe.
        return batch_norm_eval_(y, self._batch_norm)


class InPlaceConvBNReLU(ConvBNReLU):
    """Inference form of :class:`ConvBNReLU`: batch norm and ReLU in the conv output's buffer."""

    plain_class = ConvBNReLU

    def after_conv(self, y: paddle.Tensor) -> paddle.Tensor:
        return F.relu_(batch_norm_eval_(y, self._batch_norm))


class InPlaceResidualBlock(ResidualBlock):
    """Inference form of a ResNet-vd block: the shortcut is added and the ReLU taken in the
    residual branch's buffer (two fewer full-size tensors per block)."""

    plain_class = ResidualBlock

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y, identity = self.residual(x)
        return F.relu_(y.add_(identity))
