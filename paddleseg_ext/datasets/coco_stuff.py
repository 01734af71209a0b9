"""COCO-Stuff 164k (Caesar et al., CVPR 2018, https://arxiv.org/abs/1612.03716), 171 classes."""

from __future__ import annotations

from ..cvlibs import manager
from .img_ann_dirs import ImgAnnDirDataset


@manager.DATASETS.register
class COCOStuff164k(ImgAnnDirDataset):
    """COCO-Stuff 164k as mmsegmentation's ``tools/dataset_converters/coco_stuff164k.py`` writes it.

    Layout under ``dataset_root``::

        images/{train2017,val2017}/*.jpg
        annotations/{train2017,val2017}/*_labelTrainIds.png   (ids 0..170, 255 unlabeled)

    The 80 thing and 91 stuff classes of COCO-Stuff, in mmseg's order (its
    ``COCOStuffDataset``; names are not listed here). Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    NUM_CLASSES = 171
    IMG_DIR, ANN_DIR = "images", "annotations"
    SPLITS = {"train": "train2017", "val": "val2017"}
    IMG_SUFFIX = ".jpg"
    SEG_SUFFIX = "_labelTrainIds.png"
    CONVERTER = "tools/dataset_converters/coco_stuff164k.py"
