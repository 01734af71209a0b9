"""Segmentation datasets, registered in ``manager.DATASETS``.

Importing this package imports every dataset module, which registers them.
"""

from .ade import ADE20K
from .camvid import CamVid
from .cityscapes import Cityscapes
from .coco_stuff import COCOStuff10k, COCOStuff164k
from .collate import collate_fn
from .dark_zurich import DarkZurich
from .dataset import Dataset, read_file_list
from .landcover import LandCover
from .night_driving import NightDriving
from .pascal_context import PascalContext, PascalContext59
from .random_windows import RandomWindows
from .remote_sensing import ISAID, LoveDA, Potsdam, Vaihingen
from .voc import PascalVOC

__all__ = ["Dataset", "Cityscapes", "ADE20K", "PascalVOC", "CamVid", "LandCover",
           "RandomWindows", "LoveDA", "Potsdam", "Vaihingen", "ISAID",
           "COCOStuff164k", "COCOStuff10k", "PascalContext", "PascalContext59", "DarkZurich",
           "NightDriving", "collate_fn", "read_file_list"]
