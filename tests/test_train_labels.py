"""Training labels travel from the loader as uint8 where they fit; the trainer gets int64."""

import os
import random

import cv2
import numpy as np
import paddle
import pytest

from paddleseg_ext.core.data import SeededDataset, train_collate, train_label
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.datasets import Dataset
from paddleseg_ext.transforms import Normalize, RandomHorizontalFlip, RandomPaddingCrop
from synthetic import make_filelist_dataset
from tiny_config import tiny_trainer, write_tiny_config


def train_set(root, num_classes=3, ignore_index=255, crop=(24, 16), **kw):
    tf = [RandomHorizontalFlip(), RandomPaddingCrop(crop_size=crop, ignore_index=ignore_index,
                                                   label_padding_value=ignore_index), Normalize()]
    return Dataset(dataset_root=root, train_path=os.path.join(root, "train.txt"), transforms=tf,
                   num_classes=num_classes, ignore_index=ignore_index, mode="train", **kw)


def int64_reference(ds, index, seed):
    """The label as the loader produced it before: Compose's int64 output, then the check."""
    random.seed(seed)
    np.random.seed(seed)
    img_path, label_path = ds.file_list[index]
    data = {"img": img_path, "img_path": img_path, "label_path": label_path, "trans_info": [],
            "gt_fields": ["label"], "label": ds.load_label(label_path)}
    data = ds.transforms(data)  # default label_dtype: int64
    assert data["label"].dtype == np.int64
    return ds.check_label_values(data["label"], img_path, "after the transforms")


def test_uint8_labels_carry_the_same_values_as_the_int64_path(tmp_path):
    root = make_filelist_dataset(str(tmp_path), num_classes=3, n_train=3, size=(40, 24))
    ds = train_set(root)
    assert ds.train_label_dtype() is np.uint8
    seeded = SeededDataset(ds)
    for i, seed in enumerate((11, 12, 13)):
        got = seeded[(i, seed)]["label"]
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got.astype(np.int64), int64_reference(ds, i, seed))


def test_collate_keeps_uint8_and_casts_once():
    labels = [np.full((4, 5), v, np.uint8) for v in (1, 255)]
    imgs = [np.ones((3, 4, 5), np.float64), np.zeros((3, 4, 5), np.float32)]
    img, lab = train_collate([{"img": a, "label": b} for a, b in zip(imgs, labels)])
    assert img.dtype == np.float32 and img.shape == (2, 3, 4, 5) and img[0].min() == 1
    assert lab.dtype == np.uint8 and lab.shape == (2, 4, 5) and lab[1].max() == 255
    # a sample whose label is int64 (e.g. more than 256 classes) makes the batch int64
    _, lab = train_collate([{"img": imgs[1], "label": labels[0]},
                            {"img": imgs[1], "label": np.full((4, 5), 299, np.int64)}])
    assert lab.dtype == np.int64 and lab[0].max() == 1 and lab[1].min() == 299
    # shapes that would broadcast are still an error batch naming the sizes
    img, lab = train_collate([{"img": imgs[1], "label": labels[0]},
                              {"img": imgs[1][:, :1], "label": labels[0][:1]}])
    assert img.shape == (1,)
    from paddleseg_ext.core.data import check_batch
    with pytest.raises(ValueError, match="differ in size"):
        check_batch(img, lab)


def test_train_label_casts_to_int64():
    lab = paddle.to_tensor(np.array([[0, 255]], np.uint8))
    out = train_label(lab)
    assert out.dtype == paddle.int64 and out.numpy().tolist() == [[0, 255]]
    same = paddle.to_tensor(np.array([[3]], np.int64))
    assert train_label(same) is same


@pytest.mark.parametrize("num_classes,ignore_index", [(300, 300), (300, -1), (3, 300), (3, -1)])
def test_labels_that_do_not_fit_uint8_stay_int64(tmp_path, num_classes, ignore_index):
    root = make_filelist_dataset(str(tmp_path), num_classes=3, n_train=2, size=(40, 24))
    if num_classes == 300:  # a 16-bit label with ids past 255
        lab = np.random.default_rng(0).integers(0, 300, (24, 40)).astype(np.uint16)
        cv2.imwrite(os.path.join(root, "labels", "train_0000.png"), lab)
    ds = train_set(root, num_classes=num_classes, ignore_index=ignore_index)
    assert ds.train_label_dtype() is np.int64
    got = SeededDataset(ds)[(0, 5)]["label"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, int64_reference(ds, 0, 5))
    if num_classes == 300:
        assert got.max() > 255


def test_invalid_labels_still_name_file_and_value(tmp_path):
    root = make_filelist_dataset(str(tmp_path), num_classes=3, n_train=2, size=(40, 24))
    bad = os.path.join(root, "labels", "train_0001.png")
    lab = np.zeros((24, 40), np.uint8)
    lab[3:6, 4:9] = 7
    cv2.imwrite(bad, lab)
    ds = train_set(root)
    with pytest.raises(ValueError, match=r"train_0001\.png has values \[7\]"):
        ds[1]
    # ignore policy: set to ignore_index, still uint8
    ds = train_set(root, invalid_label="ignore")
    out = SeededDataset(ds)[(1, 3)]["label"]
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}
    # values outside [0, 256) reach the check as they are (no wrap-around to a valid id)
    wide = os.path.join(root, "labels", "train_0000.png")
    lab16 = np.zeros((24, 40), np.uint16)
    lab16[0, 0] = 258  # 258 % 256 == 2 would be a valid class
    cv2.imwrite(wide, lab16)
    with pytest.raises(ValueError, match=r"train_0000\.png has values \[258\]"):
        train_set(root)[0]


def test_the_trainer_steps_on_int64_labels(tmp_path, monkeypatch):
    path, _ = write_tiny_config(tmp_path, iters=2)
    b = SegBuilder(Config(path))
    trainer = tiny_trainer(b, tmp_path / "out", 2, 2, save_interval=100)
    seen, real_step = [], trainer.run_step

    def step(img, label):
        seen.append((label.dtype, label.numpy().copy()))
        return real_step(img, label)

    monkeypatch.setattr(trainer, "run_step", step)
    # What the loader sends for iteration 1, built in this thread: with num_workers=0
    # Paddle's loader prefetches in a thread, and an abandoned loader's thread would
    # keep reseeding the global RNGs while the trainer's loader draws its augmentations.
    first = next(iter(trainer.loader().batch_sampler))
    ref = train_collate([SeededDataset(b.train_dataset)[item] for item in first])[1]
    assert ref.dtype == np.uint8
    trainer.train()
    assert len(seen) == 2 and all(dtype == paddle.int64 for dtype, _ in seen)
    np.testing.assert_array_equal(seen[0][1], ref.astype(np.int64))
