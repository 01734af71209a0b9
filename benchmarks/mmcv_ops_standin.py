"""Stand-ins for the two compiled ``mmcv.ops`` that mmsegmentation's PSANet and PointRend call.

Test-only code for the peer environment (``.venv-peers``): mmcv-lite 2.1.0 ships the Python
wrappers of ``mmcv.ops`` but not the compiled ``mmcv._ext`` they load, and PyPI has no CPU
build of it. The two ops are re-written here from their documented semantics, in PyTorch:

* ``PSAMask(psa_type, mask_size)`` (mmcv ``ops/psa_mask.py``, the kernel of Zhao et al.,
  "PSANet", ECCV 2018, hszhao/semseg ``lib/psa``): input ``[N, mh*mw, H, W]``, an
  ``mh x mw`` window predicted at every position, centred with ``hh = (mh-1)//2`` rows
  above and ``hw = (mw-1)//2`` columns left (the wrapper passes ``half_h_mask=(h_mask-1)//2``,
  so an even window reaches one row further down than up); output ``[N, H*W, H, W]``, zero
  except: collect ``out[n, th*W+tw, h, w] = in[n, i*mw+j, h, w]``, distribute
  ``out[n, h*W+w, th, tw] = in[n, i*mw+j, h, w]``, for ``(th, tw) = (h+i-hh, w+j-hw)``
  inside the map.
* ``point_sample(input, points, align_corners=False, **kwargs)`` (mmcv
  ``ops/point_sample.py``): ``grid_sample`` at ``points`` given in ``[0, 1]`` (mapped to
  ``[-1, 1]``), zero padding (grid_sample's default), ``[N, P, 2] -> [N, C, P]``. As the
  real op, it refuses points of another dtype than the input (mmseg's ``PointHead`` builds
  its test points in float32, so mmseg's PointRend does not run in float64).

``tests/test_peer_mmseg.py`` checks ``PSAMask`` against this toolkit's
:func:`paddleseg_ext.ops.psa_mask.psa_mask_reference` for odd and even windows.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F

__all__ = ["PSAMask", "point_sample", "psa_mask"]

_INDEX: Dict[Tuple[int, int, int, int, int], torch.Tensor] = {}


def _scatter_index(h: int, w: int, mh: int, mw: int, direction: int) -> torch.Tensor:
    """For every (mask cell, position) the flat index into the ``[H*W, H*W]`` output, or -1."""
    key = (h, w, mh, mw, direction)
    if key not in _INDEX:
        i = torch.arange(mh).view(mh, 1, 1, 1)
        j = torch.arange(mw).view(1, mw, 1, 1)
        y = torch.arange(h).view(1, 1, h, 1)
        x = torch.arange(w).view(1, 1, 1, w)
        ty, tx = y + i - (mh - 1) // 2, x + j - (mw - 1) // 2
        inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        target = (ty * w + tx).expand(mh, mw, h, w)
        source = (y * w + x).expand(mh, mw, h, w)
        # collect: row = target, column = the predicting position; distribute: the transpose.
        row, col = (target, source) if direction == 0 else (source, target)
        _INDEX[key] = torch.where(inside, row * (h * w) + col, torch.full_like(row, -1)).reshape(-1)
    return _INDEX[key]


def psa_mask(x: torch.Tensor, direction: int, mask_size: Tuple[int, int]) -> torch.Tensor:
    """``[N, mh*mw, H, W]`` window logits -> ``[N, H*W, H, W]`` (module doc)."""
    n, c, h, w = x.shape
    mh, mw = mask_size
    if c != mh * mw:
        raise ValueError(f"PSAMask stand-in: {c} channels, mask {mh}x{mw}")
    index = _scatter_index(h, w, mh, mw, direction)
    keep = index >= 0
    out = x.new_zeros((n, h * w * h * w))
    out[:, index[keep]] = x.reshape(n, -1)[:, keep]
    return out.view(n, h * w, h, w)


class PSAMask(torch.nn.Module):
    """``mmcv.ops.PSAMask`` from its documented semantics (module doc)."""

    def __init__(self, psa_type: str, mask_size: Any = None) -> None:
        super().__init__()
        if psa_type not in ("collect", "distribute"):
            raise ValueError(f"PSAMask stand-in: psa_type {psa_type!r}")
        self.direction = 0 if psa_type == "collect" else 1
        self.mask_size = tuple(mask_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return psa_mask(x, self.direction, self.mask_size)


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False,
                 **kwargs: Any) -> torch.Tensor:
    """``mmcv.ops.point_sample`` from its documented semantics (module doc)."""
    add_dim = points.dim() == 3
    grid = (points.unsqueeze(2) if add_dim else points) * 2.0 - 1.0
    out = F.grid_sample(input, grid, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if add_dim else out
