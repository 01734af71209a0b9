"""Data transforms (PaddleSeg-compatible), registered in ``manager.TRANSFORMS``.

Importing this package imports every transform module, which registers them.
See :mod:`paddleseg_ext.transforms.base` for the data-dict contract.
"""

from . import functional  # noqa: F401
from .compose import Compose
from .geometric import (Padding, RandomHorizontalFlip, RandomPaddingCrop, RandomRotation,
                        RandomVerticalFlip, Resize, ResizeByLong, ResizeByShort,
                        ResizeRangeScaling, ResizeStepScaling)
from .loading import read_image, read_label
from .photometric import Normalize, RandomBlur, RandomDistort

__all__ = [
    "Compose", "Resize", "ResizeByLong", "ResizeByShort", "ResizeStepScaling",
    "ResizeRangeScaling", "RandomPaddingCrop", "RandomHorizontalFlip", "RandomVerticalFlip",
    "RandomRotation", "Padding", "RandomDistort", "RandomBlur", "Normalize",
    "read_image", "read_label", "functional",
]
