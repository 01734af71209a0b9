"""The datasets of the mmseg recipes read the layouts mmsegmentation's converters write.

Tiny synthetic folders in each layout (mmseg's docs/en/user_guides/2_dataset_prepare.md):
ADEChallengeData2016, VOCdevkit with VOCaug's ``SegmentationClassAug`` + ``aug.txt``, and the
``img_dir`` / ``ann_dir`` sets (LoveDA, Potsdam, Vaihingen, iSAID) and COCO-Stuff 164k / 10k, each read through the recipe
of the same name with its transforms, labels converted by mmseg's rules.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.datasets.folder_dataset import reduce_zero_label
from synthetic import make_ade20k, make_voc, write_image, write_label

ROOT = Path(__file__).resolve().parents[1]
PSP = ROOT / "configs" / "pspnet" / "mmseg"


#: (image folder, label folder, split folders, image suffix) of mmseg's converted layouts.
IMG_ANN = ("img_dir", "ann_dir", ("train", "val"), ".png")
COCO = ("images", "annotations", ("train2017", "val2017"), ".jpg")
#: COCO-Stuff 10k as mmseg's coco_stuff10k.py converter writes it (val reads its test split).
COCO10K = ("images", "annotations", ("train2014", "test2014"), ".jpg")


def _img_ann_dirs(root, raw_ids, seg_suffix=".png", size=(40, 36), n=(2, 1), layout=IMG_ANN):
    """``<images>/<split>/*<img suffix>`` + ``<labels>/<split>/*<seg_suffix>`` with raw ids."""
    img_dir, ann_dir, splits, img_suffix = layout
    rng = np.random.default_rng(0)
    for split, count in zip(splits, n):
        for i in range(count):
            stem = f"tile_{split}_{i}"
            label = rng.choice(raw_ids, size=(size[1], size[0])).astype(np.uint8)
            write_image(os.path.join(root, img_dir, split, stem + img_suffix),
                        rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
            write_label(os.path.join(root, ann_dir, split, stem + seg_suffix), label)
    return str(root)


def _datasets(recipe, root):
    opts = [f"train_dataset.dataset_root={root}", f"val_dataset.dataset_root={root}"]
    b = SegBuilder(Config(str(recipe), opts=opts))
    return b.train_dataset, b.val_dataset


def test_reduce_zero_label_is_mmsegs_rule():
    raw = np.array([[0, 1, 2, 255], [150, 7, 0, 3]], np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(raw),
                                  [[255, 0, 1, 255], [149, 6, 255, 2]])


@pytest.mark.parametrize("recipe,raw_ids,seg_suffix,want_classes,layout", [
    ("pspnet_r18-d8_4xb4-80k_loveda-512x512", [0, 1, 4, 7], ".png", 7, IMG_ANN),
    ("pspnet_r18-d8_4xb4-80k_potsdam-512x512", [0, 1, 3, 6], ".png", 6, IMG_ANN),
    ("pspnet_r18-d8_4xb4-80k_vaihingen-512x512", [0, 2, 5, 6], ".png", 6, IMG_ANN),
    ("pspnet_r18-d8_4xb4-80k_isaid-896x896", [0, 3, 15, 255], "_instance_color_RGB.png", 16, IMG_ANN),
    ("pspnet_r50-d8_4xb4-80k_coco-stuff164k-512x512", [0, 91, 170, 255], "_labelTrainIds.png", 171, COCO),
    # converter ids 1..171 (0 unlabeled); mmseg reads them with reduce_zero_label=True
    ("pspnet_r50-d8_4xb4-20k_coco-stuff10k-512x512", [0, 1, 92, 171], "_labelTrainIds.png", 171, COCO10K),
])
def test_img_ann_dir_sets(tmp_path, recipe, raw_ids, seg_suffix, want_classes, layout):
    root = _img_ann_dirs(tmp_path / "data", raw_ids, seg_suffix, layout=layout)
    train, val = _datasets(PSP / f"{recipe}.yml", root)
    assert (len(train), len(val)) == (2, 1) and train.num_classes == want_classes
    img, lab = val.file_list[0]
    img_dir, ann_dir, splits, img_suffix = layout
    assert img.endswith(os.path.join(img_dir, splits[1], f"tile_{splits[1]}_0{img_suffix}"))
    assert lab.endswith(os.path.join(ann_dir, splits[1], f"tile_{splits[1]}_0" + seg_suffix))
    from paddleseg_ext.transforms.loading import read_label

    raw = read_label(lab)
    got = val[0]["label"].squeeze()
    if type(val).REDUCE_ZERO_LABEL:
        np.testing.assert_array_equal(got, reduce_zero_label(raw))
        assert (got[raw == 0] == 255).all()
    else:  # iSAID: 0 is the background class; COCO-Stuff 164k's ids are already train ids
        np.testing.assert_array_equal(got, raw)
    item = train[0]  # the recipe's training transforms run on it
    assert item["img"].shape[0] == 3 and item["label"].ndim >= 2


def test_img_ann_dir_layout_errors_name_the_converter(tmp_path):
    root = _img_ann_dirs(tmp_path / "data", [1, 2])
    os.rename(os.path.join(root, "ann_dir"), os.path.join(root, "labels"))
    with pytest.raises(FileNotFoundError, match=r"ann_dir/train.*tools/dataset_converters/loveda.py"):
        _datasets(PSP / "pspnet_r18-d8_4xb4-80k_loveda-512x512.yml", root)
    root2 = _img_ann_dirs(tmp_path / "isaid", [0, 1])  # labels without iSAID's suffix
    with pytest.raises(FileNotFoundError, match="_instance_color_RGB.png"):
        _datasets(PSP / "pspnet_r18-d8_4xb4-80k_isaid-896x896.yml", root2)


def test_ade20k_recipe_reads_adechallengedata2016(tmp_path):
    root = make_ade20k(tmp_path / "ADEChallengeData2016", size=(60, 40))
    train, val = _datasets(PSP / "pspnet_r50-d8_4xb4-80k_ade20k-512x512.yml", root)
    assert (len(train), len(val), val.num_classes) == (2, 2, 150)
    item = val[0]
    # mmseg's test resize: short side 512 (60x40 -> 768x512), labels kept at their size
    assert item["img"].shape[1:] == (512, 768) and item["label"].squeeze().shape == (40, 60)
    lab = item["label"]
    assert lab[lab != 255].max() == 149 and (lab == 255).any()


def test_voc_aug_recipe_reads_mmsegs_vocaug_conversion(tmp_path):
    root = make_voc(tmp_path / "VOCdevkit", n_train=2, n_val=1, n_aug_extra=2, size=(50, 40))
    train, val = _datasets(PSP / "pspnet_r50-d8_4xb4-20k_voc12aug-512x512.yml", root)
    # aug.txt (VOC train + SBD ids) with SegmentationClassAug labels; val.txt with the VOC labels
    assert len(train) == 4 and all("SegmentationClassAug" in lab for _, lab in train.file_list)
    assert len(val) == 1 and "SegmentationClass" + os.sep in val.file_list[0][1]
    assert val[0]["img"].shape[1:] == (512, 640)  # short side 512


@pytest.mark.parametrize("recipe,raw_ids,want", [
    ("pspnet_r101-d8_4xb4-40k_pascal-context-480x480", [0, 1, 59], 60),
    ("pspnet_r101-d8_4xb4-40k_pascal-context-59-480x480", [0, 1, 59], 59),
])
def test_pascal_context_reads_mmsegs_voc2010_layout(tmp_path, recipe, raw_ids, want):
    root = tmp_path / "VOCdevkit" / "VOC2010"
    rng = np.random.default_rng(1)
    sets = root / "ImageSets" / "SegmentationContext"
    sets.mkdir(parents=True)
    for split, ids in (("train", ["2008_000002", "2008_000003"]), ("val", ["2008_000008"])):
        (sets / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
        for i in ids:
            write_image(root / "JPEGImages" / f"{i}.jpg", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
            write_label(root / "SegmentationClassContext" / f"{i}.png",
                        rng.choice(raw_ids, size=(30, 40)).astype(np.uint8))
    train, val = _datasets(PSP / f"{recipe}.yml", root)
    assert (len(train), len(val), val.num_classes) == (2, 1, want)
    from paddleseg_ext.transforms.loading import read_label

    raw = read_label(val.file_list[0][1])
    got = val[0]["label"].squeeze()
    np.testing.assert_array_equal(got, reduce_zero_label(raw) if want == 59 else raw)
    assert val[0]["img"].shape[1:] == (390, 520)  # fitted into 520x520 (40x30 -> 520x390)


def test_coco_stuff10k_bad_label_is_one_clear_error(tmp_path):
    """A raw id past the converter's 171 (an unconverted COCO id) names the file and value."""
    root = _img_ann_dirs(tmp_path / "data", [0, 1, 182], "_labelTrainIds.png", layout=COCO10K)
    _, val = _datasets(PSP / "pspnet_r50-d8_4xb4-20k_coco-stuff10k-512x512.yml", root)
    assert type(val).__name__ == "COCOStuff10k" and val.num_classes == 171
    with pytest.raises(ValueError) as e:
        val[0]
    msg = str(e.value)
    assert "tile_test2014_0_labelTrainIds.png has values [181] outside [0, 171)" in msg, msg


def test_coco_stuff10k_layout_error_names_the_converter(tmp_path):
    root = _img_ann_dirs(tmp_path / "data", [1, 2], "_labelTrainIds.png", layout=COCO)  # 164k's folders
    with pytest.raises(FileNotFoundError, match=r"images/train2014.*tools/dataset_converters/coco_stuff10k.py"):
        _datasets(PSP / "pspnet_r50-d8_4xb4-20k_coco-stuff10k-512x512.yml", root)


#: (recipe, image folder, label folder, image suffix, label suffix, dataset) of mmseg's test-only
#: sets in Cityscapes train ids (its dark_zurich.py / night_driving.py and the configs' prefixes).
NIGHT_SETS = [
    ("pspnet_r50-d8_4xb2-40k_cityscapes-512x1024_dark-zurich-1920x1080", "rgb_anon/val/night/GOPR0356",
     "gt/val/night/GOPR0356", "_rgb_anon.png", "_gt_labelTrainIds.png", "DarkZurich"),
    ("pspnet_r101b-d8_4xb2-80k_cityscapes-512x1024_night-driving-1920x1080", "leftImg8bit/test/night",
     "gtCoarse_daytime_trainvaltest/test/night", "_leftImg8bit.png", "_gtCoarse_labelTrainIds.png",
     "NightDriving"),
]


def _night_set(root, img_dir, ann_dir, img_suffix, seg_suffix, raw_ids, n=2, size=(48, 27)):
    rng = np.random.default_rng(2)
    for i in range(n):
        stem = f"GOPR0356_frame_{i:06d}"
        write_image(os.path.join(root, img_dir, stem + img_suffix),
                    rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        write_label(os.path.join(root, ann_dir, stem + seg_suffix),
                    rng.choice(raw_ids, size=(size[1], size[0])).astype(np.uint8))
    return str(root)


@pytest.mark.parametrize("recipe,img_dir,ann_dir,img_suffix,seg_suffix,dataset", NIGHT_SETS,
                         ids=lambda x: x if x in ("DarkZurich", "NightDriving") else "")
def test_night_sets_read_mmsegs_test_layout(tmp_path, recipe, img_dir, ann_dir, img_suffix, seg_suffix, dataset):
    root = _night_set(tmp_path / "night", img_dir, ann_dir, img_suffix, seg_suffix, [0, 5, 18, 255])
    cfg = Config(str(PSP / f"{recipe}.yml"), opts=[f"val_dataset.dataset_root={root}"])
    val = SegBuilder(cfg).val_dataset
    assert type(val).__name__ == dataset and (len(val), val.num_classes) == (2, 19)
    img, lab = val.file_list[0]
    assert img.endswith(os.path.join(img_dir, "GOPR0356_frame_000000" + img_suffix))
    assert lab.endswith(os.path.join(ann_dir, "GOPR0356_frame_000000" + seg_suffix))
    item = val[0]
    # mmseg's test Resize(scale=(1920, 1080), keep_ratio=True): 48x27 -> 1920x1080; labels kept
    assert item["img"].shape[1:] == (1080, 1920) and item["label"].squeeze().shape == (27, 48)
    from paddleseg_ext.transforms.loading import read_label

    np.testing.assert_array_equal(item["label"].squeeze(), read_label(lab))  # train ids as they are
    # the model is trained on Cityscapes: the recipe's train_dataset is Cityscapes'
    assert cfg.dic["train_dataset"]["type"] == "Cityscapes"
    test = type(val)(root, [], mode="test")
    assert len(test) == 2 and all(label is None for _, label in test.file_list)


@pytest.mark.parametrize("recipe,img_dir,ann_dir,img_suffix,seg_suffix,dataset", NIGHT_SETS,
                         ids=lambda x: x if x in ("DarkZurich", "NightDriving") else "")
def test_night_sets_errors_name_the_path_file_and_value(tmp_path, recipe, img_dir, ann_dir, img_suffix,
                                                        seg_suffix, dataset):
    from paddleseg_ext.cvlibs import manager

    cls = manager.DATASETS.get(dataset)
    root = _night_set(tmp_path / "night", img_dir, ann_dir, img_suffix, seg_suffix, [0, 1, 19])
    with pytest.raises(ValueError, match=r"mode 'train' is not available.*train on Cityscapes"):
        cls(root, [], mode="train")
    val = cls(root, [], mode="val")
    with pytest.raises(ValueError) as e:  # 19 is past Cityscapes' 19 train ids (0..18, 255 void)
        val[0]
    assert f"GOPR0356_frame_000000{seg_suffix} has values [19] outside [0, 19)" in str(e.value), str(e.value)
    wrong = tmp_path / "wrong"  # the images one folder off mmseg's prefix
    os.makedirs(wrong)
    os.rename(os.path.join(root, img_dir.split("/")[0]), wrong / "images")
    with pytest.raises(FileNotFoundError, match=f"image folder not found: {root}/{img_dir}"):
        cls(root, [], mode="val")
    root2 = _night_set(tmp_path / "nolabels", img_dir, ann_dir, img_suffix, seg_suffix, [1])
    for f in os.listdir(os.path.join(root2, ann_dir)):
        os.rename(os.path.join(root2, ann_dir, f), os.path.join(root2, ann_dir, f.replace(seg_suffix, "_gt.png")))
    with pytest.raises(FileNotFoundError, match=f"2 label file\\(s\\) not found.*{seg_suffix}"):
        cls(root2, [], mode="val")
