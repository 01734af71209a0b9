"""Tests of paddleseg_ext.datasets on the synthetic layouts of tests/synthetic.py."""

import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic as S  # noqa: E402

import paddleseg_ext  # noqa: E402,F401
from paddleseg_ext import transforms as T  # noqa: E402
from paddleseg_ext.cvlibs import ConfigError, manager  # noqa: E402
from paddleseg_ext.datasets import (ADE20K, CamVid, Cityscapes, Dataset, LandCover,  # noqa: E402
                                    PascalVOC, collate_fn)
from paddleseg_ext.transforms.loading import read_label  # noqa: E402


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    return {
        "cityscapes": S.make_cityscapes(base / "cityscapes", n_train=2, n_val=2, size=(64, 32)),
        "voc": S.make_voc(base / "VOCdevkit", n_train=2, n_val=2, size=(48, 40)),
        "ade": S.make_ade20k(base / "ADEChallengeData2016", size=(48, 40)),
        "camvid": S.make_camvid(base / "camvid", size=(48, 36)),
        "generic": S.make_filelist_dataset(base / "generic", num_classes=5, size=(40, 30)),
        "landcover": S.make_landcover(base / "landcover", size=(32, 32)),
    }


def train_tf():
    return [T.ResizeStepScaling(0.75, 1.25), T.RandomPaddingCrop((32, 24)),
            T.RandomHorizontalFlip(), T.RandomDistort(), T.Normalize()]


def check_sample(s, img_hw, label_hw, num_classes, ignore=255):
    assert s["img"].dtype == np.float32 and s["img"].shape == (3,) + tuple(img_hw)
    # train labels travel as uint8 where they fit (tests/test_train_labels.py checks which)
    assert s["label"].dtype in (np.uint8, np.int64) and s["label"].shape == tuple(label_hw)
    vals = np.unique(s["label"])
    assert ((vals >= 0) & (vals < num_classes) | (vals == ignore)).all()
    assert isinstance(s["trans_info"], list)
    assert os.path.isfile(s["img_path"]) and os.path.isfile(s["label_path"])
    assert "gt_fields" not in s


def test_registered_and_metadata():
    for cls, n in ((Cityscapes, 19), (ADE20K, 150), (PascalVOC, 21), (CamVid, 11),
                   (LandCover, 7)):
        assert manager.DATASETS.get(cls.__name__) is cls
        assert cls.NUM_CLASSES == n and len(cls.CLASS_NAMES) == n
    assert manager.DATASETS.get("Dataset") is Dataset and Dataset.NUM_CLASSES is None


# --------------------------------------------------------------------------- #
# Layouts
# --------------------------------------------------------------------------- #
def test_cityscapes(roots):
    ds = Cityscapes(dataset_root=roots["cityscapes"], transforms=train_tf(), mode="train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.class_names[0] == "road"
    assert ds.file_list[0][1].endswith("_gtFine_labelTrainIds.png")
    check_sample(ds[0], (24, 32), (24, 32), 19)
    val = Cityscapes(dataset_root=roots["cityscapes"], transforms=[T.Normalize()], mode="val")
    check_sample(val[1], (32, 64), (32, 64), 19)
    with pytest.raises(FileNotFoundError, match="image folder not found: .*leftImg8bit.test"):
        Cityscapes(dataset_root=roots["cityscapes"], transforms=[], mode="test")


def test_val_label_keeps_original_resolution(roots):
    tf = [T.Resize(target_size=(32, 16)), T.Normalize()]
    s = Cityscapes(dataset_root=roots["cityscapes"], transforms=tf, mode="val")[0]
    assert s["img"].shape == (3, 16, 32)
    assert s["label"].shape == (32, 64)
    assert s["trans_info"] == [("resize", (32, 64))]
    np.testing.assert_array_equal(s["label"], read_label(s["label_path"]))
    t = Cityscapes(dataset_root=roots["cityscapes"], transforms=tf, mode="train")[0]
    assert t["label"].shape == (16, 32)  # train: label follows the image


def test_ade20k_reduce_zero_label(roots):
    for mode in ("train", "val"):
        ds = ADE20K(dataset_root=roots["ade"], transforms=[T.Normalize()], mode=mode)
        assert len(ds) == 2 and ds.num_classes == 150
        s = ds[0]
        raw = read_label(s["label_path"]).astype(np.int64)
        expected = np.where(raw == 0, 255, raw - 1)
        np.testing.assert_array_equal(s["label"], expected)
        assert 149 in s["label"] and 255 in s["label"]
    # Padding added by transforms stays 255 (reduction happens before them).
    ds = ADE20K(dataset_root=roots["ade"], mode="train",
                transforms=[T.Padding(target_size=(64, 64)), T.Normalize()])
    s = ds[0]
    assert (s["label"][40:, :] == 255).all()
    raw = read_label(s["label_path"]).astype(np.int64)
    np.testing.assert_array_equal(s["label"][:40, :48], np.where(raw == 0, 255, raw - 1))


def test_pascal_voc_modes(roots):
    sizes = {"train": 2, "val": 2, "trainval": 4, "trainaug": 3}
    for mode, n in sizes.items():
        ds = PascalVOC(dataset_root=roots["voc"], transforms=[T.Normalize()], mode=mode)
        assert len(ds) == n and ds.split == mode
        assert ds.mode == ("val" if mode == "val" else "train")
        s = ds[len(ds) - 1]
        check_sample(s, (40, 48), (40, 48), 21)
        folder = "SegmentationClassAug" if mode == "trainaug" else "SegmentationClass"
        assert os.sep + folder + os.sep in s["label_path"]
    # Palette PNG labels are read as class indices, with the 255 outline.
    s = PascalVOC(dataset_root=roots["voc"], transforms=[], mode="val")[0]
    assert 255 in s["label"] and s["label"][s["label"] != 255].max() < 21
    # dataset_root may also be the VOC2012 folder itself.
    ds = PascalVOC(dataset_root=os.path.join(roots["voc"], "VOC2012"), transforms=[],
                   mode="train")
    assert len(ds) == 2
    with pytest.raises(ValueError, match="mode must be one of"):
        PascalVOC(dataset_root=roots["voc"], transforms=[], mode="test")


def test_voc_trainaug_without_list(roots, tmp_path):
    root = shutil.copytree(roots["voc"], tmp_path / "voc")
    os.remove(root / "VOC2012" / "ImageSets" / "Segmentation" / "aug.txt")
    with pytest.raises(FileNotFoundError, match="aug.txt.*train_aug.txt.*SegmentationClassAug"):
        PascalVOC(dataset_root=str(root), transforms=[], mode="trainaug")


def test_camvid(roots):
    ds = CamVid(dataset_root=roots["camvid"], transforms=train_tf(), mode="train")
    assert len(ds) == 2 and ds.ignore_index == 255
    check_sample(ds[1], (24, 32), (24, 32), 11)
    check_sample(CamVid(dataset_root=roots["camvid"], transforms=[T.Normalize()],
                        mode="val")[0], (36, 48), (36, 48), 11)
    test = CamVid(dataset_root=roots["camvid"], transforms=[T.Normalize()], mode="test")[0]
    assert "label" not in test and test["img"].shape == (3, 36, 48)


def test_generic_dataset_and_test_mode(roots):
    r = roots["generic"]
    ds = Dataset(dataset_root=r, transforms=train_tf(), num_classes=5, mode="train",
                 train_path="train.txt")
    assert ds.file_list[0] == (os.path.join(r, "images", "train_0000.png"),
                               os.path.join(r, "labels", "train_0000.png"))
    check_sample(ds[0], (24, 32), (24, 32), 5)
    test = Dataset(dataset_root=r, transforms=[T.Normalize()], num_classes=5, mode="test",
                   test_path=os.path.join(r, "test.txt"))  # absolute list path works too
    s = test[0]
    assert "label" not in s and s["label_path"] == "" and test.file_list[0][1] is None


def test_landcover(roots):
    ds = LandCover(dataset_root=roots["landcover"], mode="train",
                   transforms=[T.RandomHorizontalFlip(), T.RandomVerticalFlip(0.5),
                               T.Normalize()])
    assert len(ds) == 4 and ds.class_names[-1] == "sediment" and ds.num_classes == 7
    check_sample(ds[0], (32, 32), (32, 32), 7)
    with pytest.raises(FileNotFoundError, match="prepare_landcover.py"):
        LandCover(dataset_root=os.path.join(roots["landcover"], "nope"), transforms=[])


def test_edge_and_collate(roots):
    ds = Dataset(dataset_root=roots["generic"], transforms=[T.Normalize()], num_classes=5,
                 mode="train", train_path="train.txt", edge=True)
    s = ds[0]
    assert s["edge"].shape == s["label"].shape and s["edge"].dtype == np.int64
    assert 0 < s["edge"].sum() < s["edge"].size
    batch = collate_fn([ds[0], ds[1]])
    assert batch["img"].shape == (2, 3, 30, 40) and batch["label"].shape == (2, 30, 40)
    assert batch["trans_info"] == [[], []] and len(batch["img_path"]) == 2


def test_accepts_compose_and_rejects_dicts(roots):
    comp = T.Compose([T.Normalize()])
    ds = Cityscapes(dataset_root=roots["cityscapes"], transforms=comp, mode="val")
    assert ds.transforms is comp
    with pytest.raises(ConfigError, match="unbuilt config dict"):
        Cityscapes(dataset_root=roots["cityscapes"], transforms=[{"type": "Normalize"}])


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


@pytest.fixture()
def generic(roots, tmp_path):
    return str(shutil.copytree(roots["generic"], tmp_path / "g"))


def test_missing_listed_file_names_path_and_line(generic):
    _write(os.path.join(generic, "bad.txt"),
           "images/train_0000.png labels/train_0000.png\n\n"
           "images/missing.png labels/train_0001.png\n")
    with pytest.raises(FileNotFoundError, match=r"bad.txt: 1 listed file.*line 3: image "
                                                r".*images.missing.png"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, train_path="bad.txt")


def test_list_and_root_errors(generic):
    with pytest.raises(FileNotFoundError, match="file list not found: .*nolist.txt"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, train_path="nolist.txt")
    with pytest.raises(FileNotFoundError, match="dataset_root not found: .*nowhere"):
        Dataset(dataset_root=os.path.join(generic, "nowhere"), transforms=[], num_classes=5,
                train_path="train.txt")
    _write(os.path.join(generic, "empty.txt"), "\n\n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, train_path="empty.txt")
    _write(os.path.join(generic, "one.txt"), "images/train_0000.png\n")
    with pytest.raises(ValueError, match=r"one.txt, line 1: expected 'image label', got "
                                         r"'images/train_0000.png'"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, train_path="one.txt")
    _write(os.path.join(generic, "three.txt"), "a.png b.png c.png\n")
    with pytest.raises(ValueError, match="three.txt, line 1: .*pick another separator"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, train_path="three.txt")
    with pytest.raises(ConfigError, match="mode is 'val' but val_path"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, mode="val")
    with pytest.raises(ValueError, match="mode must be one of"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, mode="training")
    with pytest.raises(ConfigError, match="num_classes is required"):
        Dataset(dataset_root=generic, transforms=[], train_path="train.txt")
    with pytest.raises(ConfigError, match="ignore_index=3 collides"):
        Dataset(dataset_root=generic, transforms=[], num_classes=5, train_path="train.txt",
                ignore_index=3)


def test_fixed_num_classes_mismatch(roots):
    with pytest.raises(ConfigError, match="has 19 classes but num_classes=20"):
        Cityscapes(dataset_root=roots["cityscapes"], transforms=[], num_classes=20)
    assert Cityscapes(dataset_root=roots["cityscapes"], transforms=[],
                      num_classes=19).num_classes == 19


def test_label_value_errors(generic):
    lab = np.zeros((30, 40), np.uint8)
    lab[:5] = 9
    lab[5:10] = 255
    S.write_label(os.path.join(generic, "labels", "train_0001.png"), lab)
    ds = Dataset(dataset_root=generic, transforms=[], num_classes=5, train_path="train.txt")
    ds[0]  # a good sample loads
    with pytest.raises(ValueError, match=r"label file .*train_0001.png has values \[9\] "
                                         r"outside \[0, 5\)"):
        ds[1]
    # RGB-encoded label
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[:10, :, 1] = 100
    S.write_image(os.path.join(generic, "labels", "train_0001.png"), rgb)
    with pytest.raises(ValueError, match="train_0001.png is an RGB colour image.*"
                                         "index/grayscale PNG is expected"):
        ds[1]
    # Image/label size mismatch names both files.
    S.write_label(os.path.join(generic, "labels", "train_0001.png"), np.zeros((31, 40)))
    with pytest.raises(ValueError, match=r"image .*train_0001.png is 30x40 .*label "
                                         r".*train_0001.png is 31x40"):
        ds[1]


def test_cityscapes_missing_label(roots, tmp_path):
    root = shutil.copytree(roots["cityscapes"], tmp_path / "cs")
    victim = sorted((root / "gtFine" / "train").rglob("*.png"))[0]
    os.remove(victim)
    with pytest.raises(FileNotFoundError, match=f"label file.*not found, e.g. .*{victim.name}"):
        Cityscapes(dataset_root=str(root), transforms=[], mode="train")


def test_paths_with_spaces_and_non_ascii(tmp_path):
    root = S.make_filelist_dataset(tmp_path / "my data" / "données 数据", num_classes=3,
                                   size=(20, 16))
    ds = Dataset(dataset_root=root, transforms=[T.Normalize()], num_classes=3,
                 train_path="train.txt")
    assert ds[0]["img"].shape == (3, 16, 20)
    # File names with spaces: resolved with the default ' ' separator ...
    os.rename(os.path.join(root, "images", "train_0000.png"),
              os.path.join(root, "images", "im 0 é.png"))
    os.rename(os.path.join(root, "labels", "train_0000.png"),
              os.path.join(root, "labels", "lab 0 é.png"))
    _write(os.path.join(root, "sp.txt"), "images/im 0 é.png labels/lab 0 é.png\n")
    ds = Dataset(dataset_root=root, transforms=[T.Normalize()], num_classes=3,
                 train_path="sp.txt")
    assert ds.file_list[0][0].endswith("im 0 é.png") and ds[0]["label"].shape == (16, 20)
    # ... and with an explicit tab separator.
    _write(os.path.join(root, "tab.txt"), "images/im 0 é.png\tlabels/lab 0 é.png\n")
    ds = Dataset(dataset_root=root, transforms=[], num_classes=3, train_path="tab.txt",
                 separator="\t")
    assert ds[0]["label_path"].endswith("lab 0 é.png")


# --------------------------------------------------------------------------- #
# configs/_base_ dataset files build against the synthetic layouts
# --------------------------------------------------------------------------- #
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs", "_base_")


def _load_cfg(name):
    """Read a base config, merging a ``_base_`` parent (minimal, for this test)."""
    import yaml
    with open(os.path.join(CONFIG_DIR, name), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    parent = cfg.pop("_base_", None)
    if parent:
        base = _load_cfg(os.path.normpath(parent))
        for key, val in cfg.items():
            if isinstance(val, dict):
                base.setdefault(key, {}).update(val)
            else:
                base[key] = val
        cfg = base
    return cfg


def _build(node):
    """Build nested ``{type: ...}`` dicts the way the config builder does."""
    if isinstance(node, list):
        return [_build(n) for n in node]
    if isinstance(node, dict):
        kwargs = {k: _build(v) for k, v in node.items() if k != "type"}
        if "type" in node:
            reg = manager.find_registry(node["type"])
            return reg.get(node["type"])(**kwargs)
        return kwargs
    return node


@pytest.mark.parametrize("name,key", [
    ("cityscapes.yml", "cityscapes"), ("ade20k.yml", "ade"), ("pascal_voc12.yml", "voc"),
    ("pascal_voc12aug.yml", "voc"), ("camvid.yml", "camvid"), ("landcover.yml", "landcover"),
])
def test_base_configs_build(name, key, roots):
    cfg = _load_cfg(name)
    assert "batch_size" not in cfg and "iters" not in cfg
    for part in ("train_dataset", "val_dataset"):
        node = dict(cfg[part], dataset_root=roots[key])
        ds = _build(node)
        assert ds.num_classes == cfg[part]["num_classes"] == type(ds).NUM_CLASSES
        s = ds[0]
        want = ds.train_label_dtype() if part == "train_dataset" else np.int64
        assert s["img"].dtype == np.float32 and s["label"].dtype == want
    if name == "pascal_voc12aug.yml":
        assert ds.split == "val" and _build(dict(cfg["train_dataset"],
                                                 dataset_root=roots[key])).split == "trainaug"


def test_bad_values_fast_screen_matches_brute_force(roots):
    # The cv2.inRange screen must never miss an invalid value: compare with a
    # plain mask over dtypes, class counts and ignore indices (incl. the int64
    # label Compose emits, bool labels and negative values).
    ds = Cityscapes(dataset_root=roots["cityscapes"], transforms=[])
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(1500):
        ds.num_classes = int(rng.choice([1, 2, 19, 150, 255, 256, 300]))
        ds.ignore_index = int(rng.choice([255, 254, -1, 19, 1000]))
        if 0 <= ds.ignore_index < ds.num_classes:
            continue
        dt = rng.choice([np.uint8, np.int64, np.int32, np.uint16, np.int8, np.bool_])
        high = {np.uint8: 256, np.int8: 128, np.bool_: 2}.get(dt, int(rng.choice([20, 256, 400])))
        low = -3 if dt in (np.int64, np.int32, np.int8) and rng.uniform() < 0.2 else 0
        lab = rng.integers(low, high, (int(rng.integers(1, 20)), int(rng.integers(1, 20))))
        if dt != np.bool_ and rng.uniform() < 0.5:  # mostly valid, the common case
            lab = np.minimum(lab, ds.num_classes - 1)
            if rng.uniform() < 0.5 and (0 <= ds.ignore_index < 128 or dt in (np.int64, np.int32)):
                lab.flat[0] = ds.ignore_index
        lab = lab.astype(dt)
        v = lab.astype(np.int64)
        mask = ((v < 0) | (v >= ds.num_classes)) & (v != ds.ignore_index)
        want, want_counts = np.unique(v[mask], return_counts=True)
        bad, counts = ds._bad_values(lab)
        np.testing.assert_array_equal(np.asarray(bad, np.int64), want)
        np.testing.assert_array_equal(np.asarray(counts, np.int64), want_counts)
        checked += 1
    assert checked > 1000


def test_generic_dataset_class_names(roots):
    names = ["a", "b", "c", "d", "e"]
    ds = Dataset(dataset_root=roots["generic"], transforms=[], num_classes=5, mode="train",
                 train_path="train.txt", class_names=names)
    assert ds.class_names == names
    assert Dataset(dataset_root=roots["generic"], transforms=[], num_classes=5, mode="train",
                   train_path="train.txt").class_names is None
    for bad in (["a", "b"], "abcde", [1, 2, 3, 4, 5]):
        with pytest.raises(ConfigError, match="class_names"):
            Dataset(dataset_root=roots["generic"], transforms=[], num_classes=5, mode="train",
                    train_path="train.txt", class_names=bad)
