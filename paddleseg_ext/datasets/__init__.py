"""Segmentation datasets, registered in ``manager.DATASETS``.

Importing this package imports every dataset module, which registers them.
"""

from .ade import ADE20K
from .camvid import CamVid
from .cityscapes import Cityscapes
from .collate import collate_fn
from .dataset import Dataset, read_file_list
from .landcover import LandCover
from .random_windows import RandomWindows
from .voc import PascalVOC

__all__ = ["Dataset", "Cityscapes", "ADE20K", "PascalVOC", "CamVid", "LandCover",
           "RandomWindows", "collate_fn", "read_file_list"]
