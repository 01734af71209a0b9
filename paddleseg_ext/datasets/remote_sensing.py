"""Aerial and satellite datasets of mmsegmentation's zoo, in its converted layout.

Each is an :class:`~paddleseg_ext.datasets.img_ann_dirs.ImgAnnDirDataset`
(``img_dir/{train,val}``, ``ann_dir/{train,val}``) as mmsegmentation 1.x's
``tools/dataset_converters/<name>.py`` writes it (docs/en/user_guides/2_dataset_prepare.md
of mmsegmentation), with mmseg's class lists and label rules.
"""

from __future__ import annotations

from ..cvlibs import manager
from .img_ann_dirs import ImgAnnDirDataset

@manager.DATASETS.register
class LoveDA(ImgAnnDirDataset):
    """LoveDA (Wang et al., NeurIPS 2021 Datasets and Benchmarks, https://arxiv.org/abs/2110.08733):
    1024x1024 tiles, 7 classes; raw 0 is no-data (ignored), raw 1..7 are the classes."""

    NUM_CLASSES = 7
    CLASS_NAMES = ["background", "building", "road", "water", "barren", "forest", "agricultural"]
    REDUCE_ZERO_LABEL = True
    CONVERTER = "tools/dataset_converters/loveda.py"


@manager.DATASETS.register
class Potsdam(ImgAnnDirDataset):
    """ISPRS Potsdam (2D semantic labeling contest), cut into 512x512 patches: 6 classes;
    raw 0 is the ignored boundary, raw 1..6 the classes."""

    NUM_CLASSES = 6
    CLASS_NAMES = ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"]
    REDUCE_ZERO_LABEL = True
    CONVERTER = "tools/dataset_converters/potsdam.py"


@manager.DATASETS.register
class Vaihingen(Potsdam):
    """ISPRS Vaihingen (2D semantic labeling contest), cut into 512x512 patches: Potsdam's
    6 classes and label rule (mmseg's ``ISPRSDataset``)."""

    CONVERTER = "tools/dataset_converters/vaihingen.py"


@manager.DATASETS.register
class ISAID(ImgAnnDirDataset):
    """iSAID (Waqas Zamir et al., CVPRW 2019, https://arxiv.org/abs/1905.12886) as semantic
    segmentation, cut into 896x896 patches: 16 classes, 0 = background is a class, 255 ignored;
    labels are ``<image name>_instance_color_RGB.png`` holding class ids."""

    NUM_CLASSES = 16
    CLASS_NAMES = ["background", "ship", "store_tank", "baseball_diamond", "tennis_court",
                   "basketball_court", "Ground_Track_Field", "Bridge", "Large_Vehicle",
                   "Small_Vehicle", "Helicopter", "Swimming_pool", "Roundabout",
                   "Soccer_ball_field", "plane", "Harbor"]
    SEG_SUFFIX = "_instance_color_RGB.png"
    CONVERTER = "tools/dataset_converters/isaid.py"
