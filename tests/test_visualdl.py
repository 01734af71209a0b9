"""What a training run with --use_vdl --do_eval writes, read back with VisualDL's LogReader."""

import os

import cv2
import numpy as np
import pytest

from paddleseg_ext.core.visualdl_hook import HPARAM_METRICS, sample_indices
from paddleseg_ext.utils.visualize import get_color_map_list, palette_array
from paddleseg_ext.utils.visualize_confusion import confusion_image
from paddleseg_ext.utils.visualize_panel import sample_panel
from tiny_config import NUM_CLASSES, load_tool, write_tiny_config

visualdl = pytest.importorskip("visualdl")


def read_records(logdir):
    from visualdl import LogReader

    files = [f for f in os.listdir(logdir) if f.startswith("vdlrecords")]
    assert len(files) == 1, files
    reader = LogReader(file_path=os.path.join(logdir, files[0]))
    tags = reader.get_tags()
    return reader, tags


def decode(record):
    return cv2.imdecode(np.frombuffer(record.image.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)


def test_a_training_run_writes_what_a_segmentation_user_looks_at(tmp_path):
    cfg, _ = write_tiny_config(tmp_path, iters=4, n_val=3)
    out = tmp_path / "out"
    result = load_tool("train").main(["--config", cfg, "--save_dir", str(out), "--do_eval", "--use_vdl",
                                      "--save_interval", "2", "--log_iters", "1", "--vdl_samples", "2",
                                      "--device", "cpu"])
    reader, tags = read_records(str(out / "vdl_log"))
    # training scalars, and the validation loss in the same chart as the training loss
    assert {"Train/loss", "Train/lr", "Evaluate/mIoU", "hparam/best_mIoU"} <= set(tags["scalar"])
    assert {"Loss/loss_seg", "Evaluate/class_IoU"} <= set(tags["scalars"])
    loss = reader.get_data("scalars", "Loss/loss_seg")
    lines = {}
    for r in loss:  # one record per line and step
        lines.setdefault(r.tag_value.tag, []).append(r.id)
    assert sorted(lines) == ["train", "val"] and lines["val"] == [2, 4] and lines["train"] == [1, 2, 3, 4]
    # per-class IoU: one chart, a line per class that has an IoU
    per_class = {r.tag_value.tag for r in reader.get_data("scalars", "Evaluate/class_IoU")}
    assert per_class and per_class <= {f"class {i}" for i in range(NUM_CLASSES)}
    # the confusion matrix and two fixed samples, at each evaluation
    assert set(tags["image"]) == {"Evaluate/confusion_matrix", "Samples/0", "Samples/2"}
    for tag in tags["image"]:
        records = reader.get_data("image", tag)
        assert [r.id for r in records] == [2, 4], tag
        pictures = [decode(r) for r in records]
        assert all(p is not None and p.ndim == 3 and p.shape[0] > 20 for p in pictures)
    # the hyper-parameters with the final metrics
    (hp,) = reader.get_data("hyper_parameters", "hparam")
    names = {h.name for h in hp.hparam.hparamInfos}
    assert {"model", "backbone", "iters", "batch_size", "learning_rate", "optimizer", "seed"} <= names
    assert [m.name for m in hp.hparam.metricInfos] == HPARAM_METRICS
    (best,) = reader.get_data("scalar", "hparam/best_mIoU")
    assert best.value == pytest.approx(result["best"]["mIoU"], abs=1e-6)


def test_sample_indices_are_fixed_and_spread():
    assert sample_indices(100, 4) == [0, 33, 66, 99]
    assert sample_indices(3, 4) == [0, 1, 2] and sample_indices(5, 0) == []


def test_sample_panel_and_confusion_pictures():
    palette = palette_array(get_color_map_list(256))
    img = np.random.RandomState(0).rand(6, 8, 10).astype(np.float32)
    label = np.zeros((8, 10), np.int64)
    label[:, 5:] = 1
    label[0, 0] = 255
    pred = np.full((8, 10), 2)
    panel = sample_panel(img, label, pred, palette, ["a", "b", "c"], bands=[2, 1, 0], scale=1)
    gt, pr = panel[:8, 14:24], panel[:8, 28:38]
    assert (gt[1, 0] == palette[0]).all() and (gt[0, 7] == palette[1]).all() and (pr[3, 3] == palette[2]).all()
    assert (gt[0, 0] == 128).all() and (pr[0, 0] == 128).all()  # the ignored pixel is grey in both
    assert panel.shape[1] > 38  # a legend to the right
    pic = confusion_image(np.array([[5, 5], [0, 10]]), ["x", "y"])
    assert pic.dtype == np.uint8 and pic.shape[2] == 3
