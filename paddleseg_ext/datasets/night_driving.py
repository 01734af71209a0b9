"""Nighttime Driving (Dai and Van Gool, ITSC 2018, https://arxiv.org/abs/1810.02575), as mmsegmentation
tests on it."""

from __future__ import annotations

from ..cvlibs import manager
from .cityscapes_test_set import CityscapesTestSet


@manager.DATASETS.register
class NightDriving(CityscapesTestSet):
    """Nighttime Driving's coarsely labelled test images (mmsegmentation's ``NightDrivingDataset``).

    Layout under ``dataset_root`` (mmseg's ``data/NighttimeDrivingTest``; its configs
    ``*_night-driving-1920x1080.py`` read these folders)::

        leftImg8bit/test/night/<name>_leftImg8bit.png
        gtCoarse_daytime_trainvaltest/test/night/<name>_gtCoarse_labelTrainIds.png

    The labels are Cityscapes train ids (255 void). Only 'val' (and 'test', images alone) exist:
    the set has no training split. Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    IMG_DIR = "leftImg8bit/test/night"
    ANN_DIR = "gtCoarse_daytime_trainvaltest/test/night"
    IMG_SUFFIX = "_leftImg8bit.png"
    SEG_SUFFIX = "_gtCoarse_labelTrainIds.png"
    TRAIN_HINT = "mmseg's Nighttime Driving recipes train on Cityscapes (their train_dataset)."
