"""Scene overlays: the class colours over a band composite of the scene, block by block.

The picture under the colours is the one ``tools/predict.py`` puts under its
overlays (:func:`paddleseg_ext.core.predict.band_composite`: chosen bands,
each stretched linearly from its 2nd to its 98th percentile, the usual display
stretch for 16-bit and reflectance imagery), with one difference a scene
needs: the percentiles are taken once, from a decimated read of the scene's
valid pixels, so every block is stretched alike and none needs the whole scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..core.predict import STRETCH_PERCENTILES, band_composite, check_overlay_bands
from ..utils.visualize import overlay
from .raster import SceneReader, model_pixels

SAMPLE_SIDE = 1024  # decimated read for the percentiles: at most 1 M pixels (54 MiB at 13 bands)
WEIGHT = 0.6  # colour weight, as tools/predict.py overlays


@dataclass(frozen=True)
class SceneOverlay:
    """How one scene's overlay blocks are drawn.

    Attributes:
        bands: band indices (after the model's band conversion) shown as RGB, or one as grey.
        limits: ``(low, high)`` stretch of each band, for the whole scene.
        cmap: flat RGB palette of the classes.
        weight: colour weight over the picture.
    """

    bands: List[int]
    limits: List[Tuple[float, float]]
    cmap: Sequence[int]
    weight: float = WEIGHT

    @classmethod
    def of(cls, reader: SceneReader, transforms: Any, bands: Optional[Sequence[int]], cmap: Sequence[int],
           sample_side: int = SAMPLE_SIDE) -> "SceneOverlay":
        """The overlay of ``reader``'s scene: percentiles of its valid pixels, decimated to
        at most ``sample_side`` a side.

        Raises:
            ValueError: ``bands`` is not 1 or 3 band indices below the model's ``img_channels``.
        """
        channels = getattr(transforms, "img_channels", reader.count)
        bands = check_overlay_bands(bands, channels) or ([0, 1, 2] if channels >= 3 else [0])
        raw, valid = reader.sample(sample_side)
        img = model_pixels(raw, transforms, reader.path)
        limits = []
        for b in bands:
            vals = img[:, :, b][valid]
            vals = vals[np.isfinite(vals)]
            lo, hi = np.percentile(vals, STRETCH_PERCENTILES) if vals.size else (0.0, 1.0)
            limits.append((float(lo), float(hi)))
        return cls(bands, limits, cmap)

    def render(self, img: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """``HxWx3`` uint8: the colours of ``classes [H, W]`` over the block ``img [H, W, C]``."""
        return overlay(band_composite(img, self.bands, limits=self.limits), classes, self.cmap, self.weight)
