"""Window planning for scenes of any size: the sliding-window grid, cut into output blocks.

The grid is the one :func:`paddleseg_ext.core.infer.slide_inference` uses
(windows every ``stride`` pixels, the last row/column shifted inside the
scene, a scene smaller than a window run whole), so a scene predicted block
by block averages exactly the windows the whole-image sliding window
averages. Blending needs nothing but the grid: the number of windows over a
pixel is ``count_y[y] * count_x[x]`` (the grid is separable).

Blocks are runs of consecutive grid cells (``block_cells`` per axis), so the
memory a block needs is fixed by the window and ``block_cells``, never by
the scene.

Shapes: windows and blocks are ``(row_off, col_off, height, width)`` in
scene pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np

Box = Tuple[int, int, int, int]  # row_off, col_off, height, width


def axis_starts(size: int, crop: int, stride: int) -> List[int]:
    """Window starts along one axis, as ``slide_inference`` places them.

    Args:
        size: scene length on this axis.
        crop: window length (a scene shorter than it is one window of ``size``).
        stride: step between window starts.

    Returns:
        Sorted, de-duplicated starts; the last window ends at ``size``.
    """
    if crop <= 0 or stride <= 0 or size <= 0:
        raise ValueError(f"window {crop}, stride {stride} and size {size} must be positive")
    n = max(int(np.ceil((size - crop) / stride)), 0) + 1
    return sorted({min(i * stride, max(size - crop, 0)) for i in range(n)})


@dataclass(frozen=True)
class AxisPlan:
    """The grid along one axis.

    Attributes:
        size: scene length.
        crop: window length (``min(window, size)``).
        starts: window starts.
        bounds: block boundaries (cell starts grouped by ``block_cells``, then ``size``).
    """

    size: int
    crop: int
    starts: Tuple[int, ...]
    bounds: Tuple[int, ...]

    @classmethod
    def make(cls, size: int, crop: int, stride: int, block_cells: int) -> "AxisPlan":
        if block_cells < 1:
            raise ValueError(f"block_cells must be >= 1, got {block_cells}")
        crop = min(crop, size)
        starts = axis_starts(size, crop, stride)
        bounds = list(starts[::block_cells]) + [size]
        return cls(size, crop, tuple(starts), tuple(bounds))

    def covering(self, lo: int, hi: int) -> List[int]:
        """Indices of the windows that overlap ``[lo, hi)``."""
        return [i for i, s in enumerate(self.starts) if s < hi and s + self.crop > lo]

    def count(self, lo: int, hi: int) -> np.ndarray:
        """How many windows cover each pixel of ``[lo, hi)`` (float32, as slide_inference counts)."""
        c = np.zeros(hi - lo, np.float32)
        for i in self.covering(lo, hi):
            s = self.starts[i]
            c[max(s, lo) - lo:min(s + self.crop, hi) - lo] += 1
        return c

    def owner(self, lo: int, hi: int) -> np.ndarray:
        """For each pixel of ``[lo, hi)``, the window whose centre part holds it.

        Consecutive windows split their overlap at its middle, so every pixel
        belongs to exactly one window (the "centre crops" of the grid).
        """
        pos = np.arange(lo, hi)
        cuts = np.array([(self.starts[i + 1] + self.starts[i] + self.crop) // 2
                         for i in range(len(self.starts) - 1)], np.int64)
        return np.searchsorted(cuts, pos, side="right")


class WindowPlan:
    """The sliding-window grid of one scene, cut into output blocks.

    Args:
        height, width: scene size in pixels.
        window: ``(w, h)`` window size (as ``--crop_size``).
        stride: ``(w, h)`` step between windows (as ``--stride``); ``stride <
            window`` gives overlapping windows.
        block_cells: grid cells per block side; a block spans at most
            ``block_cells * stride`` pixels per side.

    Raises:
        ValueError: a non-positive size, window or stride.
    """

    def __init__(self, height: int, width: int, window: Sequence[int], stride: Sequence[int],
                 block_cells: int = 4) -> None:
        if len(window) != 2 or len(stride) != 2:
            raise ValueError(f"window and stride are (w, h) pairs, got {window!r}, {stride!r}")
        self.height, self.width = int(height), int(width)
        self.rows = AxisPlan.make(self.height, int(window[1]), int(stride[1]), block_cells)
        self.cols = AxisPlan.make(self.width, int(window[0]), int(stride[0]), block_cells)

    @property
    def num_windows(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    def window(self, r: int, c: int) -> Box:
        """Box of grid window ``(r, c)``."""
        return (self.rows.starts[r], self.cols.starts[c], self.rows.crop, self.cols.crop)

    def blocks(self) -> Iterator[Box]:
        """Output blocks in raster order; together they tile the scene exactly once."""
        rb, cb = self.rows.bounds, self.cols.bounds
        for i in range(len(rb) - 1):
            for j in range(len(cb) - 1):
                yield (rb[i], cb[j], rb[i + 1] - rb[i], cb[j + 1] - cb[j])

    def windows_over(self, block: Box) -> List[Tuple[int, int]]:
        """Grid windows ``(r, c)`` overlapping ``block``, in raster order (the
        order ``slide_inference`` adds them in)."""
        y, x, h, w = block
        return [(r, c) for r in self.rows.covering(y, y + h) for c in self.cols.covering(x, x + w)]

    def windows_owning(self, block: Box) -> List[Tuple[int, int]]:
        """Grid windows whose centre part meets ``block`` (see :meth:`AxisPlan.owner`)."""
        y, x, h, w = block
        rs = np.unique(self.rows.owner(y, y + h))
        cs = np.unique(self.cols.owner(x, x + w))
        return [(int(r), int(c)) for r in rs for c in cs]

    def count(self, block: Box) -> np.ndarray:
        """``[h, w]`` float32: windows over each pixel of ``block``."""
        y, x, h, w = block
        return np.outer(self.rows.count(y, y + h), self.cols.count(x, x + w))
