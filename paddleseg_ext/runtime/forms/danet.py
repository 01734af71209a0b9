"""DANet's two branch-input convolutions as one, with their weights stacked.

Both branches of :class:`~paddleseg_ext.models.danet.DAHead` start with a 3x3 ConvBNReLU of
the same input. Stacking the two weights along the output channels makes it one convolution
call: one im2col of the input (the head's largest buffer) instead of two. Each half then
goes through its own batch norm (per channel, so the same statistics as apart) and ReLU.
"""

from __future__ import annotations

from typing import Tuple

import paddle

from ...models.danet import DAHead
from .conv import explicit_padding, strip_conv2d

__all__ = ["StackedDAHead", "stacking_applies"]


def stacking_applies(head: DAHead) -> bool:
    """Both input convolutions share stride, dilation, groups, zero padding and bias use."""
    a, b = head.pam_in._conv, head.cam_in._conv
    pad = explicit_padding(a)
    return (pad is not None and explicit_padding(b) == pad
            and (a._stride, a._dilation, a._groups) == (b._stride, b._dilation, b._groups)
            and (a.bias is None) == (b.bias is None))


class StackedDAHead(DAHead):
    """Form of :class:`DAHead` whose branch inputs come from one stacked convolution.

    Attributes:
        budget_bytes, winograd: how the stacked convolution runs (:func:`~.conv.strip_conv2d`).
    """

    plain_class = DAHead
    form_attributes = ("budget_bytes", "winograd")

    def branch_inputs(self, x: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        convs = (self.pam_in._conv, self.cam_in._conv)
        weight = paddle.concat([c.weight for c in convs], axis=0)
        bias = None if convs[0].bias is None else paddle.concat([c.bias for c in convs])
        y = strip_conv2d(x, weight, bias, convs[0]._stride, explicit_padding(convs[0]),
                         convs[0]._dilation, convs[0]._groups, self.budget_bytes, self.winograd)
        pam_y, cam_y = paddle.split(y, 2, axis=1)
        return self.pam_in.after_conv(pam_y), self.cam_in.after_conv(cam_y)
