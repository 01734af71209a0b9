"""Multi-band and 16-bit imagery end to end: reading (TIFF samples / planes / pages,
.npy), clear errors naming the file, per-band Normalize, img_channels reaching the
backbone stem, predict overlays on chosen bands, export with the band count in
deploy.yaml and Paddle Inference / ONNX deploy reading the same file types."""

import importlib.util
import os
import sys
import textwrap

import cv2
import numpy as np
import paddle
import pytest
import yaml

tifffile = pytest.importorskip("tifffile")

from paddleseg_ext.core.predict import band_composite, predict  # noqa: E402
from paddleseg_ext.cvlibs import Config, ConfigError, SegBuilder  # noqa: E402
from paddleseg_ext.datasets import Dataset  # noqa: E402
from paddleseg_ext.transforms import Compose, Normalize, read_image  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy", "python")
sys.path.insert(0, DEPLOY)

import infer  # noqa: E402

RNG = np.random.default_rng(0)


def _write_tif(path, hwc):
    """An ``HxWxC`` array as a TIFF with C samples per pixel (tifffile would guess
    other layouts for some shapes)."""
    tifffile.imwrite(str(path), hwc, photometric="minisblack", planarconfig="contig")


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}_mb", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("layout", ["samples", "planes", "pages"])
def test_tiff_bands_in_any_layout_read_in_file_order(tmp_path, layout):
    bands = RNG.integers(0, 65536, (6, 9, 7), dtype=np.uint16)  # C, H, W
    path = str(tmp_path / "x.tif")
    if layout == "samples":
        _write_tif(path, bands.transpose(1, 2, 0))
    elif layout == "planes":
        tifffile.imwrite(path, bands, photometric="minisblack", planarconfig="separate")
    else:
        with tifffile.TiffWriter(path) as w:
            for b in bands:
                w.write(b)
    img = read_image(path, img_channels=6)
    assert img.shape == (9, 7, 6) and img.dtype == np.float32
    # 16-bit reaches the transforms in the 0..255 range: raw / 257, band order kept
    np.testing.assert_allclose(img, bands.transpose(1, 2, 0).astype(np.float32) * np.float32(255 / 65535),
                               rtol=1e-6)


def test_rgb_tiff_through_tifffile_gives_the_same_pixels_as_opencv(tmp_path):
    rgb = RNG.integers(0, 256, (8, 5, 3), dtype=np.uint8)
    path = str(tmp_path / "rgb.tif")
    assert cv2.imwrite(path, rgb[:, :, ::-1])  # OpenCV writes BGR data as an RGB TIFF
    np.testing.assert_array_equal(read_image(path), rgb.astype(np.float32))
    np.testing.assert_array_equal(read_image(path, to_rgb=False), rgb[:, :, ::-1].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_npy_images_any_band_count(tmp_path, dtype):
    arr = (RNG.random((5, 4, 7)) * 200).astype(dtype)
    path = str(tmp_path / "x.npy")
    np.save(path, arr)
    img = read_image(path, img_channels=7)
    np.testing.assert_array_equal(img, arr.astype(np.float32))
    one = str(tmp_path / "grey.npy")
    np.save(one, arr[:, :, 0])
    assert read_image(one, img_channels=1).shape == (5, 4, 1)


def test_wrong_band_count_names_the_file(tmp_path):
    path = str(tmp_path / "five.tif")
    _write_tif(path, np.zeros((4, 4, 5), np.uint16))
    with pytest.raises(ValueError, match=r"five\.tif.*5 channels but img_channels=6"):
        read_image(path, img_channels=6)
    with pytest.raises(ValueError, match=r"five\.tif.*Set img_channels=5"):
        read_image(path)  # the 3-channel default explains the multi-band setting


@pytest.mark.parametrize("arr, match", [
    (np.zeros((4, 4, 6), np.complex64), "pixel type complex64"),
    (np.zeros((4, 4, 6), np.uint32), "pixel type uint32"),
    (np.full((4, 4, 6), np.nan, np.float32), "non-finite"),
])
def test_unsupported_dtype_or_nan_names_the_file(tmp_path, arr, match):
    path = str(tmp_path / "bad.npy")
    np.save(path, arr)
    with pytest.raises(ValueError, match=rf"bad\.npy.*{match}"):
        read_image(path, img_channels=6)


def test_npy_object_array_is_refused_not_unpickled(tmp_path):
    path = str(tmp_path / "obj.npy")
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy.*\.npy array"):
        read_image(path, img_channels=1)


def test_channel_first_npy_is_explained(tmp_path):
    path = str(tmp_path / "chw.npy")
    np.save(path, np.zeros((6, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"chw\.npy.*channel-first.*transpose"):
        read_image(path, img_channels=6)


def test_truncated_tiff_names_the_file(tmp_path):
    path = tmp_path / "cut.tif"
    _write_tif(path, RNG.integers(0, 65536, (16, 16, 6), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.tif"):
        read_image(str(path), img_channels=6)


# ------------------------------------------------------------------ normalisation


def test_normalize_per_band_and_max_value():
    img = RNG.random((3, 4, 6)).astype(np.float32) * 255
    mean, std = [0.1 * i for i in range(6)], [0.5 + 0.1 * i for i in range(6)]
    out = Normalize(mean, std)({"img": img.copy()})["img"]
    np.testing.assert_allclose(out, (img / 255 - np.float32(mean)) / np.float32(std), rtol=1e-5, atol=1e-6)
    # floats in their own units: max_value maps them to 1
    refl = RNG.random((3, 4, 2)).astype(np.float32) * 10000
    out = Normalize([0.3, 0.2], [0.1, 0.1], max_value=10000)({"img": refl.copy()})["img"]
    np.testing.assert_allclose(out, (refl / 10000 - np.float32([0.3, 0.2])) / np.float32([0.1, 0.1]),
                               rtol=1e-5, atol=1e-5)


def test_normalize_16bit_mean_std_are_fractions_of_65535(tmp_path):
    raw = RNG.integers(800, 1600, (8, 8, 2), dtype=np.uint16)
    path = str(tmp_path / "u16.tif")
    _write_tif(path, raw)
    m = raw.reshape(-1, 2).mean(0) / 65535
    s = raw.reshape(-1, 2).std(0) / 65535
    out = Compose([Normalize(list(m), list(s))], img_channels=2)({"img": path})["img"]
    assert out.shape == (2, 8, 8)
    np.testing.assert_allclose(out.mean((1, 2)), 0, atol=1e-3)
    np.testing.assert_allclose(out.std((1, 2)), 1, atol=1e-3)


@pytest.mark.parametrize("kw, match", [
    ({"mean": [0.5] * 6, "std": [0.5] * 5}, "mean has 6 values but std has 5"),
    ({"mean": [0.5] * 6, "std": [0.5] * 6, "max_value": 0}, "max_value must be a number > 0"),
])
def test_normalize_argument_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        Normalize(**kw)


def test_normalize_length_must_match_the_band_count_at_build_and_call(tmp_path):
    root = _multiband_dataset(tmp_path, channels=6, n=2)
    with pytest.raises(ConfigError, match="3 mean/std values but img_channels=6"):
        Dataset(root, [Normalize()], num_classes=3, mode="train", train_path="train.txt", img_channels=6)
    with pytest.raises(ValueError, match=r"3 values but the image \(image .*\.tif\) has 6 channels"):
        Compose([Normalize()], img_channels=6)({"img": os.path.join(root, "images", "0.tif")})


# ------------------------------------------------------------------ a multi-band dataset, model, export, deploy


def _multiband_dataset(tmp_path, channels, n=4, size=(24, 32), ext=".tif", dtype=np.uint16):
    """``n`` images whose class is readable from band 0 (class c: band 0 near 10000 * (c + 1))."""
    root = tmp_path / f"mb{channels}{ext[1:]}"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    for i in range(n):
        label = np.zeros(size, np.uint8)
        label[: size[0] // 2, : size[1] // 2] = 1
        label[size[0] // 2:, size[1] // 2:] = 2
        img = RNG.integers(0, 3000, size + (channels,)).astype(np.float64)
        img[:, :, 0] += 10000.0 * (label + 1)
        img = img.astype(dtype)
        name = f"{i}{ext}"
        if ext == ".npy":
            np.save(str(root / "images" / name), img)
        else:
            _write_tif(root / "images" / name, img)
        cv2.imwrite(str(root / "labels" / f"{i}.png"), label)
        lines.append(f"images/{name} labels/{i}.png\n")
    (root / "train.txt").write_text("".join(lines))
    (root / "val.txt").write_text("".join(lines[:2]))
    return str(root)


def _config(tmp_path, root, channels, name="mb.yml"):
    mean, std = [0.2] * channels, [0.1] * channels
    text = textwrap.dedent(f"""
        batch_size: 2
        iters: 3
        train_dataset:
          type: Dataset
          dataset_root: {root}
          train_path: train.txt
          num_classes: 3
          img_channels: {channels}
          mode: train
          transforms:
            - type: RandomHorizontalFlip
            - type: Normalize
              mean: {mean}
              std: {std}
        val_dataset:
          type: Dataset
          dataset_root: {root}
          val_path: val.txt
          num_classes: 3
          img_channels: {channels}
          mode: val
          transforms:
            - type: Normalize
              mean: {mean}
              std: {std}
        optimizer: {{type: sgd, momentum: 0.9}}
        lr_scheduler: {{type: PolynomialDecay, learning_rate: 0.01, end_lr: 0, power: 0.9}}
        loss:
          types: [{{type: CrossEntropyLoss}}]
          coef: [1]
        model:
          type: PSPNet
          backbone: {{type: ResNet18_vd, output_stride: 8}}
          bin_sizes: [1, 2]
          pp_out_channels: 16
          enable_auxiliary_loss: False
        """)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("channels, ext, dtype", [(6, ".tif", np.uint16), (1, ".npy", np.float32)])
def test_img_channels_reach_the_stem_and_training_runs(tmp_path, channels, ext, dtype):
    root = _multiband_dataset(tmp_path, channels, ext=ext, dtype=dtype)
    b = SegBuilder(Config(_config(tmp_path, root, channels)))
    model = b.model
    assert b.img_channels == channels
    assert model.backbone.conv1_1._conv.weight.shape[1] == channels
    sample = b.train_dataset[0]
    assert sample["img"].shape == (channels, 24, 32)
    model.train()
    logits = model(paddle.to_tensor(np.stack([sample["img"], b.train_dataset[1]["img"]])))
    assert logits[0].shape == [2, 3, 24, 32]


def test_backbone_in_channels_conflict_is_an_error(tmp_path):
    root = _multiband_dataset(tmp_path, 6, n=2)
    cfg = _config(tmp_path, root, 6)
    with pytest.raises(ConfigError, match=r"in_channels \(3\) != dataset img_channels \(6\)"):
        SegBuilder(Config(cfg, opts=["model.backbone.in_channels=3"])).model  # noqa: B018


def test_band_composite_stretches_chosen_bands():
    img = np.zeros((10, 10, 6), np.float32)
    img[:, :, 2] = np.arange(100).reshape(10, 10) * 100.0  # a ramp: 2..98 % stretched to 0..255
    img[:, :, 4] = 7.0
    rgb = band_composite(img, [2, 4, 2])
    assert rgb.dtype == np.uint8 and rgb.shape == (10, 10, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 0 < rgb[5, 5, 0] < 255
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])
    grey = band_composite(img, [2])
    np.testing.assert_array_equal(grey[:, :, 0], grey[:, :, 1])
    with pytest.raises(ValueError, match=r"band\(s\) \[6\] out of range.*img_channels=6"):
        band_composite(img, [6, 1, 0])
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3"):
        band_composite(img, [0, 1])


def test_predict_writes_overlays_on_chosen_bands(tmp_path):
    root = _multiband_dataset(tmp_path, 6, n=2)
    b = SegBuilder(Config(_config(tmp_path, root, 6)))
    transforms = Compose(b.val_transforms, img_channels=6)
    out = str(tmp_path / "pred")
    written = predict(b.model, transforms, os.path.join(root, "images"), out, overlay_bands=[2, 1, 0], legend=False)
    assert len(written) == 2
    over = cv2.imread(os.path.join(out, "added_prediction", "0.jpg"))
    assert over is not None and over.shape == (24, 32, 3)
    with pytest.raises(ValueError, match="out of range"):
        predict(b.model, transforms, os.path.join(root, "images"), out, overlay_bands=[9, 1, 0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """6-band uint16 TIFF and 1-band float .npy models, exported (Paddle + ONNX when available)."""
    tmp = tmp_path_factory.mktemp("mbexport")
    export_tool = _load_tool("export")
    out = {}
    for channels, ext, dtype in ((6, ".tif", np.uint16), (1, ".npy", np.float32)):
        sub = tmp / f"c{channels}"
        sub.mkdir()
        root = _multiband_dataset(sub, channels, n=3, ext=ext, dtype=dtype)
        cfg = _config(sub, root, channels)
        paddle.seed(0)
        model = SegBuilder(Config(cfg)).model
        weights = str(sub / "w.pdparams")
        paddle.save(model.state_dict(), weights)
        export_tool.main(["--config", cfg, "--model_path", weights, "--save_dir", str(sub / "paddle")])
        onnx_dir = None
        if importlib.util.find_spec("paddle2onnx") and importlib.util.find_spec("onnxruntime"):
            export_tool.main(["--config", cfg, "--model_path", weights, "--save_dir", str(sub / "onnx"),
                              "--format", "onnx"])
            onnx_dir = str(sub / "onnx")
        out[channels] = {"cfg": cfg, "root": root, "weights": weights, "paddle": str(sub / "paddle"),
                         "onnx": onnx_dir, "tmp": sub}
    return out


@pytest.mark.parametrize("channels", [6, 1])
def test_deploy_yaml_records_bands_and_normalisation(exported, channels):
    with open(os.path.join(exported[channels]["paddle"], "deploy.yaml")) as f:
        d = yaml.safe_load(f)["Deploy"]
    assert d["img_channels"] == channels
    assert d["input_shape"] == [-1, channels, -1, -1]
    assert d["transforms"] == [{"type": "Normalize", "mean": [0.2] * channels, "std": [0.1] * channels}]
    assert d["normalize"] == {"mean": [0.2] * channels, "std": [0.1] * channels, "max_value": 255.0}


def test_export_input_shape_with_the_wrong_band_count_is_refused(exported, tmp_path):
    export_tool = _load_tool("export")
    with pytest.raises(ValueError, match=r"3 channels but the model takes img_channels=6"):
        export_tool.main(["--config", exported[6]["cfg"], "--save_dir", str(tmp_path / "x"),
                          "--input_shape", "1", "3", "24", "32"])


def _dygraph_preds(e, channels):
    b = SegBuilder(Config(e["cfg"]))
    model = b.model
    model.set_state_dict(paddle.load(e["weights"]))
    model.eval()
    t = Compose(b.val_transforms, img_channels=channels)
    files = sorted(os.listdir(os.path.join(e["root"], "images")))
    preds = {}
    with paddle.no_grad():
        for f in files:
            x = t({"img": os.path.join(e["root"], "images", f)})["img"][None]
            preds[f] = paddle.argmax(model(paddle.to_tensor(x))[0], axis=1).numpy()[0]
    return preds


@pytest.mark.parametrize("channels", [6, 1])
def test_paddle_inference_reads_the_same_files_and_agrees(exported, channels):
    e = exported[channels]
    ref = _dygraph_preds(e, channels)
    preds = infer.main(["--config", e["paddle"], "--image_path", os.path.join(e["root"], "images"),
                        "--save_dir", str(e["tmp"] / "deploy_out"), "--cpu_threads", "1"])
    assert len(preds) == len(ref) == 3
    for path, pred in preds:
        np.testing.assert_array_equal(pred, ref[os.path.basename(path)])
    assert os.path.isfile(str(e["tmp"] / "deploy_out" / "0.png"))


@pytest.mark.parametrize("channels", [6, 1])
def test_onnx_deploy_reads_the_same_files_and_agrees(exported, channels):
    e = exported[channels]
    if e["onnx"] is None:
        pytest.skip("paddle2onnx/onnxruntime not installed")
    import infer_onnx

    ref = _dygraph_preds(e, channels)
    preds = infer_onnx.main(["--config", e["onnx"], "--image_path", os.path.join(e["root"], "images"),
                             "--save_dir", str(e["tmp"] / "onnx_out"), "--cpu_threads", "1"])
    assert len(preds) == 3
    for path, pred in preds:
        np.testing.assert_array_equal(pred, ref[os.path.basename(path)])


def test_deploy_skips_a_tile_with_the_wrong_band_count_naming_it(exported, tmp_path):
    e = exported[6]
    folder = tmp_path / "tiles"
    folder.mkdir()
    _write_tif(folder / "good.tif", RNG.integers(0, 60000, (24, 32, 6), dtype=np.uint16))
    _write_tif(folder / "four.tif", RNG.integers(0, 60000, (24, 32, 4), dtype=np.uint16))
    cfg = infer.DeployConfig(e["paddle"])
    pred = infer.Predictor(cfg, cpu_threads=1)
    out = pred.predict([str(folder / "good.tif"), str(folder / "four.tif")], quiet=True)
    assert [os.path.basename(p) for p, _ in out] == ["good.tif"]
    (path, why), = pred.skipped
    assert path.endswith("four.tif") and "four.tif" in why and "4 channels but img_channels=6" in why
