"""Dark Zurich (Sakaridis et al., ICCV 2019, https://arxiv.org/abs/1901.05946), as mmsegmentation tests on it."""

from __future__ import annotations

from ..cvlibs import manager
from .cityscapes_test_set import CityscapesTestSet


@manager.DATASETS.register
class DarkZurich(CityscapesTestSet):
    """Dark Zurich's labelled night images (mmsegmentation's ``DarkZurichDataset``).

    Layout under ``dataset_root`` (mmseg's ``data/dark_zurich``; its configs
    ``*_dark-zurich-1920x1080.py`` read these folders)::

        rgb_anon/val/night/GOPR0356/<name>_rgb_anon.png
        gt/val/night/GOPR0356/<name>_gt_labelTrainIds.png      (Cityscapes train ids, 255 void)

    Only 'val' (and 'test', images alone) exist: mmseg evaluates Cityscapes-trained models on
    this set and trains none on it. Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    IMG_DIR = "rgb_anon/val/night/GOPR0356"
    ANN_DIR = "gt/val/night/GOPR0356"
    IMG_SUFFIX = "_rgb_anon.png"
    SEG_SUFFIX = "_gt_labelTrainIds.png"
    TRAIN_HINT = "mmseg's Dark Zurich recipes train on Cityscapes (their train_dataset)."
