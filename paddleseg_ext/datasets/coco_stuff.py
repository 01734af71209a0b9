"""COCO-Stuff 164k and 10k (Caesar et al., CVPR 2018, https://arxiv.org/abs/1612.03716).

Both in mmsegmentation's converted layouts, 171 classes.
"""

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


@manager.DATASETS.register
class COCOStuff10k(COCOStuff164k):
    """COCO-Stuff 10k as mmsegmentation's ``tools/dataset_converters/coco_stuff10k.py`` writes it.

    Layout under ``dataset_root`` (mmseg's ``data/coco_stuff10k``)::

        images/{train2014,test2014}/*.jpg
        annotations/{train2014,test2014}/*_labelTrainIds.png

    The converter maps the COCO-Stuff ids of the ``.mat`` files (1..182, with gaps)
    to 1..171 and keeps 0 for unlabeled; mmseg reads them with ``reduce_zero_label=True`` (its
    ``_base_/datasets/coco-stuff10k.py``), so raw 0 is ignored and raw ``k`` is
    class ``k - 1``: the same 171 classes, in the same order, as
    :class:`COCOStuff164k`. Mode ``val`` reads mmseg's test split (``test2014``,
    1000 images), which is what mmseg validates on. Folders and suffixes otherwise as
    :class:`COCOStuff164k`'s. Arguments as
    :class:`~paddleseg_ext.datasets.folder_dataset.FolderDataset`.
    """

    SPLITS = {"train": "train2014", "val": "test2014"}
    REDUCE_ZERO_LABEL = True
    CONVERTER = "tools/dataset_converters/coco_stuff10k.py"
