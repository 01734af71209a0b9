"""Winograd F(2x2, 3x3) convolution for CPU training and inference.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016
(https://arxiv.org/abs/1509.09308). A 3x3 convolution with stride 1 and
"same" zero padding (padding = dilation) is computed per 2x2 output tile as
``Y = A^T [(G g G^T) . (B^T D B)] A``: 16 multiplications per input/output
channel pair instead of 36, so the GEMM work drops by 2.25x. The dilated
form pairs outputs ``(y, y + d)`` with a 4x4 input tile of stride ``d``.

The two tile transforms are the compiled custom op in ``custom_ops/winograd``
(CPU, linear, each one's backward its adjoint); the weight transform
``U = G g G^T`` and the 16 GEMMs ``M[k] = U[k] @ V[k]`` are Paddle ops, so
autograd differentiates the weight path and the GEMMs. The result equals
``F.conv2d`` up to float rounding (the transforms add and subtract inputs
before the products; tests compare values and gradients).

GPUs keep cuDNN's convolution: the op has no CUDA kernels on purpose.
"""

from __future__ import annotations

from typing import Optional

import paddle

from .custom_op_build import CompiledOp

__all__ = ["winograd_conv3x3", "winograd_transform_weight", "is_winograd_available",
           "WINOGRAD_INPUT_OP", "WINOGRAD_OUTPUT_OP"]

WINOGRAD_INPUT_OP = "winograd_input_transform"
WINOGRAD_OUTPUT_OP = "winograd_output_transform"

_OP = CompiledOp(
    WINOGRAD_INPUT_OP, "winograd", cpu_sources=["winograd.cc"],
    headers=["winograd/winograd_tiles.h", "common/cpu_parallel.h"],
    build_hint="Build it with `python -m paddleseg_ext.ops.build` (needs a C++ compiler); "
               "without it 3x3 convolutions use F.conv2d.")

# G of F(2, 3): U = G g G^T maps a 3x3 kernel onto its 4x4 tile-domain form.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
# U[4i + j] = sum_ab G[i, a] G[j, b] g[a, b]: G g G^T of every 3x3 kernel as one
# [16, 9] matrix, so the transform is a single GEMM over all (C_out, C_in) pairs.
_KRON_G = tuple(tuple(gi * gj for gi in ri for gj in rj) for ri in _G for rj in _G)


def is_winograd_available(build: bool = True) -> bool:
    """Whether the transform op is loaded (building it first when ``build``)."""
    return _OP.available(build)


def winograd_transform_weight(weight: paddle.Tensor) -> paddle.Tensor:
    """``U = G g G^T`` of ``weight [C_out, C_in, 3, 3]`` as ``[16, C_out, C_in]``.

    One GEMM, ``kron(G, G) [16, 9] @ weight [C_out * C_in, 9]^T``, whose output is
    already in the ``[16, C_out, C_in]`` layout (two broadcast matmuls with ``G``
    ran one tiny GEMM per kernel and needed a transposing copy, forward and
    backward: 2.6-3.4x the time on ResNet stage 4 and PPM weights).
    """
    k = paddle.to_tensor(_KRON_G, dtype=weight.dtype, place=weight.place)
    co, ci = int(weight.shape[0]), int(weight.shape[1])
    return paddle.matmul(k, weight.reshape([co * ci, 9]), transpose_y=True).reshape([16, co, ci])


def winograd_conv3x3(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor] = None,
                     dilation: int = 1) -> paddle.Tensor:
    """``F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)`` by Winograd F(2x2, 3x3).

    Args:
        x: ``[N, C_in, H, W]`` float32/float64 on the CPU.
        weight: ``[C_out, C_in, 3, 3]``.
        bias: ``[C_out]`` or None.
        dilation: the convolution's dilation (and padding), >= 1.

    Returns:
        ``[N, C_out, H, W]``.

    Raises:
        RuntimeError: If the compiled op cannot be loaded or built.
    """
    module, _ = _OP.load_library(True)
    n, _, h, w = (int(s) for s in x.shape)
    v = module.winograd_input_transform(x, int(dilation))
    m = paddle.matmul(winograd_transform_weight(weight), v)
    y = module.winograd_output_transform(m, n, h, w, int(dilation))
    if bias is not None:
        y = y + bias.reshape([1, -1, 1, 1])
    return y
