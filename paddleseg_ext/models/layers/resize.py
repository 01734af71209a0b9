"""Resizing helper used to bring logits back to the input resolution."""

from __future__ import annotations

from typing import List, Sequence, Union

import paddle
import paddle.nn.functional as F


def spatial_size(x: paddle.Tensor) -> Union[List[int], paddle.Tensor]:
    """``(H, W)`` of ``x`` (``[N, C, H, W]``): ints in dygraph, a shape tensor
    when traced by ``paddle.jit.to_static`` (where H, W may be dynamic, -1).

    The one place a layer asks which mode it runs in: an exported program must compute
    sizes from the input at run time, and no rewrite can hand a layer a size it does not
    know yet; dygraph keeps plain ints (cheaper, and exact comparisons for :func:`resize_to`).
    """
    if paddle.in_dynamic_mode():
        return [int(s) for s in x.shape[2:]]
    return paddle.shape(x)[2:]


def resize_to(x: paddle.Tensor, size: Union[Sequence[int], paddle.Tensor],
              align_corners: bool = False, mode: str = "bilinear") -> paddle.Tensor:
    """Resize ``x`` (``[N, C, H, W]``) to spatial ``size`` ``(H', W')``.

    Returns ``x`` itself when the size already matches (saves a kernel launch
    and keeps eval outputs bit-identical for stride-1 heads).

    Args:
        x: feature map or logits, ``[N, C, H, W]``.
        size: target ``(H', W')``; ints or a shape tensor (export mode); use
            :func:`spatial_size` to take it from a reference tensor.
        align_corners: passed to ``F.interpolate``; PaddleSeg uses False for
            even crop sizes (1024x512) and True for odd ones (769x769).
        mode: interpolation mode, ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``[N, C, H', W']`` tensor.
    """
    if not isinstance(size, paddle.Tensor):
        size = [int(s) for s in size]
        # Dygraph only: the traced program must keep the resize op (dy2static cannot
        # turn this comparison of a dynamic shape into graph control flow).
        if paddle.in_dynamic_mode() and list(x.shape[2:]) == size:
            return x
    kwargs = {"align_corners": align_corners} if mode != "nearest" else {}
    return F.interpolate(x, size=size, mode=mode, **kwargs)
