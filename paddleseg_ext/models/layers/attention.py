"""Position and channel self-attention modules of DANet."""

from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddleseg_ext.cvlibs.validators import POSITIVE_INT, validated


def _zero_scale(layer: nn.Layer) -> paddle.Tensor:
    # A learnable scalar that starts at 0: at initialisation the module is the
    # identity, and the network learns how much attention to mix in (paper Sec. 3.2).
    return layer.create_parameter(shape=[1], dtype="float32",
                                  default_initializer=nn.initializer.Constant(0.0))


@validated(in_channels=POSITIVE_INT, reduction=POSITIVE_INT)
class PAM(nn.Layer):
    """Position attention module.

    Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019
    (https://arxiv.org/abs/1809.02983), Sec. 3.2, Eq. 1-2: 1x1 convs give a
    query and a key (``C / reduction`` channels) and a value (C channels);
    ``s_ji = softmax_i(q_j . k_i)`` is the weight of position i for output
    position j, and ``out_j = gamma * sum_i s_ji v_i + x_j`` with a learnable
    ``gamma`` initialised to 0.

    Args:
        in_channels: C.
        reduction: channel reduction of query and key (8 in the paper).

    Shape:
        x: ``[N, C, H, W]`` -> ``[N, C, H, W]``; memory is ``O(N (HW)^2)``.
    """

    def __init__(self, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        key_channels = max(1, in_channels // reduction)
        self.in_channels = in_channels
        self.query_conv = nn.Conv2D(in_channels, key_channels, 1)
        self.key_conv = nn.Conv2D(in_channels, key_channels, 1)
        self.value_conv = nn.Conv2D(in_channels, in_channels, 1)
        self.gamma = _zero_scale(self)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        query = self.query_conv(x).flatten(2).transpose([0, 2, 1])  # [N, HW, C']
        key = self.key_conv(x).flatten(2)  # [N, C', HW]
        attn = F.softmax(paddle.bmm(query, key), axis=-1)  # [N, HW(out j), HW(in i)]
        value = self.value_conv(x).flatten(2)  # [N, C, HW]
        # out[:, :, j] = sum_i v_i s_ji; the GEMM reads attn transposed (no [HW, HW] copy)
        out = paddle.matmul(value, attn, transpose_y=True)
        return self.gamma * out.reshape(paddle.shape(x)) + x


class CAM(nn.Layer):
    """Channel attention module.

    Fu et al., CVPR 2019 (https://arxiv.org/abs/1809.02983), Sec. 3.3, Eq.
    3-4: channel affinities ``E = X X^T`` (``[C, C]``, no projections),
    ``out = beta * softmax(E') X + x`` with a learnable ``beta`` initialised
    to 0. As in the authors' code, the softmax is taken over
    ``E' = max_row(E) - E`` (their stabilisation against diverging
    gradients; it also makes dissimilar channels weigh more).

    Shape:
        x: ``[N, C, H, W]`` -> ``[N, C, H, W]``; memory is ``O(N C^2)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.beta = _zero_scale(self)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        feats = x.flatten(2)  # [N, C, HW]
        energy = paddle.bmm(feats, feats.transpose([0, 2, 1]))  # [N, C, C]
        # softmax(max_row(E) - E) == softmax(-E): a softmax ignores a per-row constant
        # and subtracts its own row max. Same values and gradient, without the max op,
        # whose CPU backward took about 5 % of a DANet-R50 train step.
        attn = F.softmax(-energy, axis=-1)
        out = paddle.bmm(attn, feats)  # [N, C, HW]
        return self.beta * out.reshape(paddle.shape(x)) + x
