"""Bad data: a clear message naming the file (and list line), or it simply works.

Dataset-level cases check the exception; the cases a user meets first are
also run through ``tools/train.py`` / ``val.py`` / ``predict.py`` as commands
(in-process ``run_cli``), checking the exit status and the ``error:`` line.
"""

import importlib.util
import io
import logging
import os
import sys
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

import synthetic as S
from paddleseg_ext import transforms as T
from paddleseg_ext.core.data import ResumableBatchSampler
from paddleseg_ext.utils.cli import run_cli
from paddleseg_ext.utils.logger import get_logger
from paddleseg_ext.datasets import Dataset
from paddleseg_ext.checkpoints import training as ckpt
from tiny_config import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Configure the toolkit log now (at collection), on a stream that lives for the whole session,
# not on the stdout capture of whichever test would log first.
get_logger()


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


train_tool, val_tool, pred_tool = load_tool("train"), load_tool("val"), load_tool("predict")
FAST = ["--device", "cpu", "--num_threads", "1", "--log_iters", "1"]


def cli(capsys, tool, *argv):
    """Run a tool as the command line does; return (exit status, stderr, stdout with the log)."""
    capsys.readouterr()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)  # the toolkit log of this run
    get_logger().addHandler(handler)
    try:
        code = run_cli(tool, [str(a) for a in argv])
    finally:
        get_logger().removeHandler(handler)
    out, err = capsys.readouterr()
    return code, err, out + buf.getvalue()


def assert_user_error(code, err, *needles, status=2):
    assert code == status, err
    err = err[err.index("error: "):] if "error: " in err else err  # (after any progress bar)
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert "DataLoader worker" not in err, err
    for n in needles:
        assert n in err, f"{n!r} not in:\n{err}"


@pytest.fixture()
def data(tmp_path):
    """A generic 3-class dataset (32x32, 6 train / 2 val) and a tiny config on it."""
    cfg, root = write_tiny_config(tmp_path, iters=3)
    return cfg, root


def ds(root, list_name="train.txt", **kw):
    kw.setdefault("num_classes", 3)
    return Dataset(dataset_root=root, transforms=[T.Normalize()], train_path=list_name, **kw)


def write_list(root, name, lines):
    with open(os.path.join(root, name), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------- #
# File lists
# --------------------------------------------------------------------------- #
def test_missing_image_and_label_name_path_and_line(data, capsys):
    cfg, root = data
    write_list(root, "train.txt", ["images/train_0000.png labels/train_0000.png",
                                   "images/gone.png labels/train_0001.png",
                                   "",
                                   "images/train_0002.png labels/gone.png"])
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, *FAST)
    assert_user_error(code, err, "train.txt: 2 listed file(s) not found",
                      "line 2: image " + os.path.join(root, "images", "gone.png"),
                      "line 4: label " + os.path.join(root, "labels", "gone.png"))


def test_empty_list_and_too_few_samples(data, capsys):
    cfg, root = data
    write_list(root, "train.txt", [])
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, *FAST)
    assert_user_error(code, err, "train.txt is empty")
    write_list(root, "train.txt", ["images/train_0000.png labels/train_0000.png"])
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, *FAST)
    assert_user_error(code, err, "The training set has 1 samples, fewer than one batch of 2")


def test_missing_dataset_root_and_list(data, capsys):
    cfg, root = data
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, *FAST, "--opts",
                       "train_dataset.dataset_root=/no/such/root")
    assert_user_error(code, err, "dataset_root not found: /no/such/root")
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, *FAST, "--opts",
                       "train_dataset.train_path=nolist.txt")
    assert_user_error(code, err, "file list not found", "nolist.txt")


# --------------------------------------------------------------------------- #
# Broken files
# --------------------------------------------------------------------------- #
def test_truncated_not_an_image_and_empty_files(data):
    _, root = data
    img = os.path.join(root, "images", "train_0001.png")
    raw = open(img, "rb").read()
    open(img, "wb").write(raw[: len(raw) // 2])
    d = ds(root)
    d[0]
    with pytest.raises(ValueError, match=r"cannot decode image file .*train_0001.png: it starts like a "
                                         r"PNG file but is truncated or corrupt"):
        d[1]
    open(img, "wb").write(b"this is a text file, not a picture\n")
    with pytest.raises(ValueError, match=r"train_0001.png: not an image format OpenCV can read"):
        d[1]
    open(img, "wb").write(b"")
    with pytest.raises(ValueError, match=r"image file is empty \(0 bytes\): .*train_0001.png"):
        d[1]
    jpg = os.path.join(root, "images", "cut.jpg")
    ok, buf = cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))
    open(jpg, "wb").write(buf.tobytes()[:200])
    write_list(root, "jpg.txt", ["images/cut.jpg labels/train_0000.png"])
    with pytest.raises(ValueError, match=r"cut.jpg: it starts like a JPEG file but is truncated"):
        ds(root, "jpg.txt")[0]
    # a truncated palette PNG label (read with Pillow)
    lab = os.path.join(root, "labels", "train_0002.png")
    S.write_label(lab, np.zeros((32, 32), np.uint8), palette=True)
    raw = open(lab, "rb").read()
    open(lab, "wb").write(raw[:60])
    with pytest.raises(ValueError, match=r"label file .*train_0002.png"):
        d[2]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(data):
    _, root = data
    img = os.path.join(root, "images", "train_0001.png")
    os.chmod(img, 0)
    try:
        with pytest.raises(PermissionError, match="cannot read image file .*train_0001.png"):
            ds(root)[1]
    finally:
        os.chmod(img, 0o644)


def test_truncated_image_through_train_cli(data, capsys):
    cfg, root = data
    for i in range(6):  # every training image broken: the first batch fails, whichever it is
        p = os.path.join(root, "images", f"train_{i:04d}.png")
        raw = open(p, "rb").read()
        open(p, "wb").write(raw[:100])
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, *FAST, "--num_workers", "2")
    assert_user_error(code, err, "it starts like a PNG file but is truncated or corrupt",
                      "while loading the batch of iter 1; no checkpoint yet")


def test_data_errors_without_workers_in_training_and_evaluation(data, capsys):
    """num_workers 0 (the default): Paddle's loader thread would die on the error and leave
    the trainer waiting forever; the error is reported instead (train and val)."""
    cfg, root = data
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 128
    rgb[:10, :, 1] = 64
    for name in [f"train_{i:04d}" for i in range(6)] + ["val_0000", "val_0001"]:
        S.write_image(os.path.join(root, "labels", name + ".png"), rgb)
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, *FAST)
    assert_user_error(code, err, "is an RGB colour image (3 channels", "index/grayscale PNG is expected",
                      "[while loading the batch of iter 1; no checkpoint yet]")
    weights = os.path.join(os.path.dirname(cfg), "w.pdparams")
    from paddleseg_ext.cvlibs import Config, SegBuilder
    import paddle
    paddle.save(SegBuilder(Config(cfg)).model.state_dict(), weights)
    code, err, _ = cli(capsys, val_tool.main, "--config", cfg, "--model_path", weights, "--device", "cpu",
                       "--num_threads", "1")
    assert_user_error(code, err, "val_0000.png is an RGB colour image")


def test_image_label_size_mismatch(data):
    _, root = data
    S.write_label(os.path.join(root, "labels", "train_0001.png"), np.zeros((31, 32), np.uint8))
    with pytest.raises(ValueError, match=r"image and label sizes differ: image .*train_0001.png is 32x32 "
                                         r"\(HxW\) but label .*train_0001.png is 31x32"):
        ds(root)[1]


# --------------------------------------------------------------------------- #
# Label values
# --------------------------------------------------------------------------- #
def test_out_of_range_labels_error_names_file_values_and_counts(data):
    _, root = data
    lab = np.zeros((32, 32), np.uint8)
    lab[:4] = 254      # 128 pixels of 254 (the classic "Target 254 is out of upper bound")
    lab[4:5, :3] = 7   # 3 pixels of 7
    lab[5:6] = 255     # ignore_index is fine
    S.write_label(os.path.join(root, "labels", "train_0001.png"), lab)
    with pytest.raises(ValueError, match=r"label file .*train_0001.png has values \[7, 254\] outside \[0, 3\) "
                                         r"that are not ignore_index=255 \(pixels per value: 7: 3, 254: 128\)"
                                         r".*invalid_label: ignore"):
        ds(root)[1]


def test_invalid_label_ignore_maps_to_ignore_index_and_warns_once(data):
    _, root = data
    lab = np.ones((32, 32), np.uint8)
    lab[:2] = 9
    S.write_label(os.path.join(root, "labels", "train_0001.png"), lab)
    d = ds(root, invalid_label="ignore")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    get_logger().addHandler(handler)
    try:
        s = d[1]
        d[1]
    finally:
        get_logger().removeHandler(handler)
    assert sorted(np.unique(s["label"]).tolist()) == [1, 255]
    assert (s["label"][:2] == 255).all() and (s["label"][2:] == 1).all()
    warnings = [line for line in buf.getvalue().splitlines() if "invalid_label: ignore" in line]
    assert len(warnings) == 1 and "train_0001.png" in warnings[0], warnings
    assert "9: 64" in warnings[0]
    # int labels (e.g. from a 16-bit or signed TIFF) with negative values, ignore_index -1
    arr = np.full((32, 32), 2, np.int32)
    arr[0, 0] = -5
    d2 = ds(root, invalid_label="ignore", ignore_index=-1)
    out = d2.check_label_values(arr, "x.tif")
    assert out[0, 0] == -1 and (out.ravel()[1:] == 2).all()


def test_bad_label_mid_training_saves_then_resume_with_ignore(data, capsys):
    """A bad label met at iter 2 (with 2 loader workers): clean message, iter_1 saved,
    and ``invalid_label: ignore`` + ``--resume_model auto`` finishes the run."""
    cfg, root = data
    batches = list(ResumableBatchSampler(6, 2, iters=3, seed=0))
    victim = batches[1][0][0]  # a sample of the batch of iter 2
    lab = S.random_label(np.random.default_rng(1), (32, 32), 3)
    lab[:3] = 200
    S.write_label(os.path.join(root, "labels", f"train_{victim:04d}.png"), lab)
    out = os.path.join(os.path.dirname(cfg), "out")
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "100",
                       "--num_workers", "2", *FAST)
    assert_user_error(code, err, f"label file {os.path.join(root, 'labels', f'train_{victim:04d}.png')} "
                                 "has values [200]", "pixels per value: 200: 96",
                      "while loading the batch of iter 2; saved " + os.path.join(out, "iter_1"),
                      "--resume_model auto")
    assert ckpt.latest_checkpoint(out) == os.path.join(out, "iter_1")
    code, err, log = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--save_interval", "100",
                         "--num_workers", "2", "--resume_model", "auto", *FAST,
                         "--opts", "train_dataset.invalid_label=ignore")
    assert code == 0, err
    assert "resumed from " + os.path.join(out, "iter_1") in log and "iter: 3/3" in log
    assert ckpt.latest_checkpoint(out) == os.path.join(out, "iter_3")


def test_rgb_label_is_detected(data):
    _, root = data
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 128
    rgb[:10, :, 1] = 64
    S.write_image(os.path.join(root, "labels", "train_0001.png"), rgb)
    with pytest.raises(ValueError, match=r"train_0001.png is an RGB colour image \(3 channels.*index/grayscale "
                                         r"PNG is expected.*Convert colour-coded masks to class ids"):
        ds(root)[1]
    # a grey label saved as RGB (all channels equal) and a palette PNG are fine
    grey = np.repeat(np.array([[0, 1], [2, 255]], np.uint8).repeat(16, 0).repeat(16, 1)[..., None], 3, 2)
    S.write_image(os.path.join(root, "labels", "train_0001.png"), grey)
    assert sorted(np.unique(ds(root)[1]["label"]).tolist()) == [0, 1, 2, 255]
    S.write_label(os.path.join(root, "labels", "train_0001.png"), grey[..., 0], palette=True)
    assert sorted(np.unique(ds(root)[1]["label"]).tolist()) == [0, 1, 2, 255]


# --------------------------------------------------------------------------- #
# Image formats and awkward paths: they simply work
# --------------------------------------------------------------------------- #
def _write_formats(root):
    """Rewrite the 6 train images as gray, RGBA, 16-bit RGB, 16-bit gray, gray+alpha, BMP (names
    with a space and an accent). Returns the list names and the RGB image each should load as."""
    names, expected = [], []
    for i in range(6):
        src = os.path.join(root, "images", f"train_{i:04d}.png")
        rgb = cv2.cvtColor(cv2.imread(src, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        os.remove(src)
        name = f"images/train {i} é.png" if i < 5 else f"images/train {i} é.bmp"
        path = os.path.join(root, name)
        if i == 4:  # gray + alpha, written by Pillow
            Image.fromarray(np.dstack([gray, np.full(gray.shape, 255, np.uint8)]), "LA").save(path)
            names.append(name)
            expected.append(np.repeat(gray[..., None], 3, 2))
            continue
        arr, exp = {0: (gray, np.repeat(gray[..., None], 3, 2)),
                    1: (np.dstack([rgb[..., ::-1], np.full(gray.shape, 200, np.uint8)]), rgb),
                    2: (rgb[..., ::-1].astype(np.uint16) * 257, rgb),
                    3: (gray.astype(np.uint16) * 257, np.repeat(gray[..., None], 3, 2)),
                    5: (rgb[..., ::-1], rgb)}[i]
        ok, buf = cv2.imencode(os.path.splitext(path)[1], arr)
        assert ok
        buf.tofile(path)
        names.append(name)
        expected.append(exp)
    return names, expected


def test_gray_rgba_16bit_images_load_as_rgb(data):
    _, root = data
    names, expected = _write_formats(root)
    write_list(root, "fmt.txt", [f"{n}\tlabels/train_{i:04d}.png" for i, n in enumerate(names)])
    d = Dataset(dataset_root=root, transforms=[], num_classes=3, train_path="fmt.txt", separator="\t")
    for i in range(6):
        s = d[i]
        assert s["img"].shape == (3, 32, 32) and s["img"].dtype == np.float32, names[i]
        np.testing.assert_allclose(s["img"].transpose(1, 2, 0), expected[i].astype(np.float32), atol=1e-3,
                                   err_msg=names[i])
    # the default ' ' separator resolves the names with spaces too
    write_list(root, "fmt_sp.txt", [f"{n} labels/train_{i:04d}.png" for i, n in enumerate(names)])
    assert Dataset(dataset_root=root, transforms=[], num_classes=3, train_path="fmt_sp.txt")[3]["img"].shape \
        == (3, 32, 32)


def test_awkward_paths_and_formats_train_val_predict_through_the_tools(tmp_path, capsys):
    """Spaces and non-ASCII characters in every path (config, data, output), tab-separated
    lists, mixed gray / RGBA / 16-bit / BMP images: train, evaluate and predict work."""
    base = tmp_path / "mes données" / "数据 集"
    base.mkdir(parents=True)
    cfg, root = write_tiny_config(base, iters=2)
    names, _ = _write_formats(root)
    write_list(root, "train.txt", [f"{n}\tlabels/train_{i:04d}.png" for i, n in enumerate(names)])
    cfg_text = open(cfg, encoding="utf-8").read().replace("mode: train", "mode: train\n  separator: \"\\t\"")
    new_cfg = base / "配置 tiny.yml"
    new_cfg.write_text(cfg_text, encoding="utf-8")
    out = base / "sortie 输出"
    code, err, log = cli(capsys, train_tool.cli, "--config", new_cfg, "--save_dir", out, *FAST)
    assert code == 0, err
    assert "iter: 2/2" in log and ckpt.is_complete(str(out / "iter_2"))
    code, err, _ = cli(capsys, val_tool.main, "--config", new_cfg, "--model_path", out / "iter_2",
                       "--device", "cpu", "--num_threads", "1")
    assert code == 0, err
    code, err, _ = cli(capsys, pred_tool.main, "--config", new_cfg, "--model_path", out / "iter_2",
                       "--image_path", os.path.join(root, "images"), "--save_dir", out / "pred 预测",
                       "--device", "cpu", "--num_threads", "1")
    assert code == 0, err
    written = sorted(os.listdir(out / "pred 预测" / "pseudo_color_prediction"))
    assert len(written) == 8 and "train 2 é.png" in written  # 6 train (all formats) + 2 val


# --------------------------------------------------------------------------- #
# Prediction inputs
# --------------------------------------------------------------------------- #
def test_predict_skips_non_images_and_broken_images(data, tmp_path, capsys):
    cfg, root = data
    out = tmp_path / "out"
    code, err, _ = cli(capsys, train_tool.cli, "--config", cfg, "--save_dir", out, "--iters", "1", *FAST)
    assert code == 0, err
    src = tmp_path / "inputs"
    (src / "sub").mkdir(parents=True)
    shutil.copy(os.path.join(root, "images", "val_0000.png"), src / "good.png")
    shutil.copy(os.path.join(root, "images", "val_0001.png"), src / "sub" / "good2.png")
    (src / "notes.txt").write_text("not an image")
    (src / "Thumbs.db").write_bytes(b"\x00\x01")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (src / "empty.jpg").write_bytes(b"")
    code, err, log = cli(capsys, pred_tool.main, "--config", cfg, "--model_path", out / "iter_1",
                         "--image_path", src, "--save_dir", tmp_path / "pred", "--device", "cpu",
                         "--num_threads", "1")
    assert code == 0, err
    assert "skipping 2 non-image file(s)" in log
    assert "skipping " + str(src / "broken.png") + ": cannot decode image file" in log
    assert "image file is empty (0 bytes)" in log
    assert "skipped 2 file(s) that could not be read" in log
    got = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "pred" / "pseudo_color_prediction")
                 for d, _, fs in os.walk(tmp_path / "pred" / "pseudo_color_prediction") for f in fs)
    assert got == ["good.png", os.path.join("sub", "good2.png")]
    # nothing readable at all: an error, not an empty result
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    code, err, _ = cli(capsys, pred_tool.main, "--config", cfg, "--model_path", out / "iter_1",
                       "--image_path", only_bad, "--save_dir", tmp_path / "pred2", "--device", "cpu")
    assert_user_error(code, err, "None of the 1 file(s)", "x.png", "not an image format")
    code, err, _ = cli(capsys, pred_tool.main, "--config", cfg, "--model_path", out / "iter_1",
                       "--image_path", src / "notes.txt", "--save_dir", tmp_path / "pred3", "--device", "cpu")
    assert_user_error(code, err, "image not found")  # a .txt is read as a list file


def test_val_with_broken_weights(data, tmp_path, capsys):
    cfg, _ = data
    bad = tmp_path / "model.pdparams"
    bad.write_bytes(b"not a pickle")
    code, err, _ = cli(capsys, val_tool.main, "--config", cfg, "--model_path", bad, "--device", "cpu")
    assert_user_error(code, err, "Model weights", "cannot be read", "damaged")
    code, err, _ = cli(capsys, val_tool.main, "--config", cfg, "--model_path", tmp_path / "nope",
                       "--device", "cpu")
    assert_user_error(code, err, "Model weights not found")
