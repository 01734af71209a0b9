"""Scenes of any size: the window grid, blending equal to whole-image sliding-window
inference, GeoTIFF outputs that stay on the map (CRS, geotransform, no-data, colour
table), the three runners' ``--scene`` mode and the errors that name file and window."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import paddle
import pytest

rasterio = pytest.importorskip("rasterio")
from affine import Affine  # noqa: E402  (rasterio's)

from paddleseg_ext.core.infer import inference  # noqa: E402
from paddleseg_ext.cvlibs import Config, SegBuilder  # noqa: E402
from paddleseg_ext.scene import NODATA_CLASS, SceneReader, WindowPlan, dygraph_predict_fn, predict_scene  # noqa: E402
from paddleseg_ext.scene.blend import iter_blocks, softmax  # noqa: E402
from paddleseg_ext.scene.raster import PROB_SCALE, gdal_env  # noqa: E402
from paddleseg_ext.transforms import Compose, Resize  # noqa: E402
from tolerance import assert_close, network_bound  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy", "python")
sys.path.insert(0, DEPLOY)

import infer  # noqa: E402

BANDS, NUM_CLASSES = 4, 3
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)  # 10 m pixels, north up
NODATA = 0
WINDOW, STRIDE = (48, 40), (36, 28)  # (w, h): overlapping, and not a divisor of the scene


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}_scene", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_scene(path, h=101, w=123, seed=0, border=(7, 5), dtype=np.uint16, tiled=False):
    """A 4-band georeferenced scene with smooth content and a no-data border
    (``border`` rows at the top, columns at the right); returns the pixels ``[C, H, W]``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(np.sin(yy / (5 + b) + xx / (7 + 2 * b)) + 1) * 20000 + rng.integers(1, 8000, (h, w))
                    for b in range(BANDS)]).astype(dtype)
    img[:, :border[0]] = NODATA
    img[:, :, w - border[1]:] = NODATA
    extra = dict(tiled=True, blockxsize=32, blockysize=32, compress="deflate") if tiled else {}
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=BANDS, dtype=img.dtype.name,
                       nodata=NODATA, crs=CRS, transform=TRANSFORM, **extra) as ds:
        ds.write(img)
    return img


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny 4-band PSPNet config, random weights, and its Paddle exports (logits, argmax)."""
    tmp = tmp_path_factory.mktemp("scene")
    cfg = tmp / "tiny4.yml"
    cfg.write_text(textwrap.dedent(f"""
        val_dataset:
          type: Dataset
          dataset_root: {tmp}
          val_path: {tmp / 'val.txt'}
          num_classes: {NUM_CLASSES}
          img_channels: {BANDS}
          mode: val
          transforms:
            - type: Normalize
              mean: [0.5, 0.5, 0.5, 0.5]
              std: [0.25, 0.25, 0.25, 0.25]
        model:
          type: PSPNet
          backbone: {{type: ResNet18_vd, output_stride: 8}}
          bin_sizes: [1, 2]
          pp_out_channels: 16
          enable_auxiliary_loss: False
        """))
    paddle.seed(0)
    builder = SegBuilder(Config(str(cfg)))
    model = builder.model
    weights = str(tmp / "weights.pdparams")
    paddle.save(model.state_dict(), weights)
    model.eval()
    transforms = Compose(builder.val_transforms, img_channels=BANDS)
    export = _load_tool("export")
    for op in ("none", "argmax"):
        export.main(["--config", str(cfg), "--model_path", weights, "--save_dir", str(tmp / f"export_{op}"),
                     "--output_op", op])
    scene = str(tmp / "scene.tif")
    pixels = write_scene(scene)
    return {"tmp": tmp, "cfg": str(cfg), "weights": weights, "model": model, "transforms": transforms,
            "scene": scene, "pixels": pixels}


def slide_logits(tiny, path, window=WINDOW, stride=STRIDE):
    """The reference: the whole image in memory through core.infer's sliding window."""
    im = tiny["transforms"]({"img": path, "trans_info": [], "gt_fields": []})["img"]
    with paddle.no_grad():
        return inference(tiny["model"], paddle.to_tensor(im[None]), is_slide=True, crop_size=window,
                         stride=stride).numpy()[0]


def scene_scores(tiny, path, batch_size, block_cells=2):
    """The blended scores ``[K, H, W]`` the scene path computes, assembled from its blocks."""
    with gdal_env(), SceneReader(path, BANDS) as reader:
        plan = WindowPlan(reader.height, reader.width, WINDOW, STRIDE, block_cells)
        out = np.full((NUM_CLASSES, reader.height, reader.width), np.nan, np.float32)
        for (y, x, h, w), _, scores in iter_blocks(reader, plan, dygraph_predict_fn(tiny["model"]),
                                                   tiny["transforms"], "logits", batch_size):
            assert np.isnan(out[:, y:y + h, x:x + w]).all(), "blocks overlap"
            out[:, y:y + h, x:x + w] = scores
    return out


# ------------------------------------------------------------------ the window grid


def _slide_count(h, w, crop, stride):
    """Windows over each pixel, counted the way slide_inference places them."""
    (cw, ch), (sw, sh) = crop, stride
    rows = max(int(np.ceil((h - ch) / sh)), 0) + 1
    cols = max(int(np.ceil((w - cw) / sw)), 0) + 1
    count = np.zeros((h, w), np.float32)
    for r in range(rows):
        for c in range(cols):
            h1, w1 = min(r * sh, max(h - ch, 0)), min(c * sw, max(w - cw, 0))
            count[h1:min(h1 + ch, h), w1:min(w1 + cw, w)] += 1
    return count


@pytest.mark.parametrize("h,w,crop,stride,cells", [(101, 123, (48, 40), (36, 28), 2), (30, 20, (48, 40), (36, 28), 1),
                                                    (97, 64, (16, 16), (16, 16), 3), (50, 77, (20, 30), (7, 11), 4)])
def test_blocks_tile_the_scene_and_counts_match_slide_inference(h, w, crop, stride, cells):
    plan = WindowPlan(h, w, crop, stride, cells)
    seen = np.zeros((h, w), int)
    count = np.zeros((h, w), np.float32)
    owners = np.zeros((h, w), int)
    for y, x, bh, bw in plan.blocks():
        seen[y:y + bh, x:x + bw] += 1
        count[y:y + bh, x:x + bw] = plan.count((y, x, bh, bw))
        for r, c in plan.windows_owning((y, x, bh, bw)):
            wy, wx, wh, ww = plan.window(r, c)
            own_r = plan.rows.owner(y, y + bh) == r
            own_c = plan.cols.owner(x, x + bw) == c
            sub = np.outer(own_r, own_c)
            owners[y:y + bh, x:x + bw] += sub
            ys, xs = np.nonzero(sub)
            assert (ys + y >= wy).all() and (ys + y < wy + wh).all() and (xs + x >= wx).all() and \
                (xs + x < wx + ww).all(), "a pixel is owned by a window that does not cover it"
    assert (seen == 1).all() and (owners == 1).all()
    np.testing.assert_array_equal(count, _slide_count(h, w, crop, stride))


# ------------------------------------------------------------------ equal to the whole-image sliding window


def test_blended_logits_equal_whole_image_sliding_window(tiny):
    """Same windows, added in the same order into the same float32 sums, divided by the same
    counts: the blended logits equal slide_inference's up to how the model itself rounds
    (a batched GEMM may block its sums differently: tests/tolerance.py's budget for the
    network, plain convolutions on both sides). At batch 1 the two are bit-identical here."""
    ref = slide_logits(tiny, tiny["scene"])
    tol = network_bound(tiny["model"], ref, winograd=False)
    for batch_size in (1, 3):
        assert_close(scene_scores(tiny, tiny["scene"], batch_size=batch_size), ref, tol, f"batch {batch_size}")


def test_plain_tiff_without_georeferencing(tiny, tmp_path):
    """A TIFF with no CRS is a scene too: the output is a plain TIFF, and nothing warns."""
    import warnings

    tifffile = pytest.importorskip("tifffile")
    path = str(tmp_path / "plain.tif")
    tifffile.imwrite(path, tiny["pixels"][:, :50, :60].transpose(1, 2, 0), photometric="minisblack",
                     planarconfig="contig")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_scene(path, str(tmp_path / "o.tif"), dygraph_predict_fn(tiny["model"]), tiny["transforms"],
                      window=WINDOW, stride=STRIDE, progress=False)
    ref = slide_logits(tiny, path).argmax(0)
    with rasterio.open(str(tmp_path / "o.tif")) as ds:
        assert ds.crs is None and ds.shape == (50, 60)
        cls = ds.read(1)
    valid = (tiny["pixels"][:, :50, :60] != NODATA).any(axis=0)
    assert (cls[valid] == ref[valid]).mean() >= 0.999


def test_predict_cli_writes_a_geotiff_on_the_map(tiny, tmp_path):
    out_dir = tmp_path / "out"
    status = _load_tool("predict").main([
        "--config", tiny["cfg"], "--model_path", tiny["weights"], "--image_path", tiny["scene"],
        "--save_dir", str(out_dir), "--scene", "--crop_size", *map(str, WINDOW), "--stride", *map(str, STRIDE),
        "--batch_size", "2", "--scene_block", "2", "--scene_probs", "uint8", "--no_fold_bn"])
    assert status == 0
    ref = slide_logits(tiny, tiny["scene"])
    valid = (tiny["pixels"] != NODATA).any(axis=0)
    with rasterio.open(out_dir / "scene.tif") as ds, rasterio.open(tiny["scene"]) as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.shape == src.shape
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == NODATA_CLASS
        cls = ds.read(1)
        colours = ds.colormap(1)
        assert colours[NODATA_CLASS][3] == 0 and colours[1][:3] != colours[2][:3]
    assert (cls[~valid] == NODATA_CLASS).all()
    assert (cls[valid] == ref.argmax(0)[valid]).mean() >= 0.999
    with rasterio.open(out_dir / "scene_prob.tif") as ds:
        assert ds.count == NUM_CLASSES and ds.crs.to_string() == CRS and ds.nodata == 255
        prob = ds.read()
    assert (prob[:, ~valid] == 255).all()
    # uint8 probabilities: round(p * 254), at most half a step off, plus what the tool's
    # inference copy (prepared by the execution policy: Winograd, strips, in-place forms) moves
    # the logits by against the plain model; |d softmax| <= 2 max |d logit|.
    expect = softmax(ref)[:, valid] * PROB_SCALE
    logit_tol = network_bound(tiny["model"], ref, winograd=True)
    assert np.abs(prob[:, valid].astype(np.float64) - expect).max() <= 0.5 + PROB_SCALE * 2 * logit_tol


def test_overlay_on_the_map_stretched_alike_over_the_scene(tiny, tmp_path):
    """--scene_overlay: RGB + alpha with the input's CRS and geotransform; every block is the
    class colours (weight 0.6) over the chosen bands stretched between the 2nd and 98th
    percentile of the whole scene's valid pixels; alpha 0 on no-data."""
    from paddleseg_ext.transforms.loading import read_image

    out_dir = tmp_path / "out"
    bands = [3, 1, 0]
    status = _load_tool("predict").main([
        "--config", tiny["cfg"], "--model_path", tiny["weights"], "--image_path", tiny["scene"],
        "--save_dir", str(out_dir), "--scene", "--crop_size", *map(str, WINDOW), "--stride", *map(str, STRIDE),
        "--scene_block", "1", "--scene_overlay", "--overlay_bands", *map(str, bands), "--no_fold_bn"])
    assert status == 0
    valid = (tiny["pixels"] != NODATA).any(axis=0)
    with rasterio.open(out_dir / "scene.tif") as ds:
        cls = ds.read(1)
        palette = np.array([ds.colormap(1)[c][:3] for c in range(256)], np.float64)
    with rasterio.open(out_dir / "scene_overlay.tif") as ds:
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM and ds.shape == valid.shape
        assert ds.count == 4 and set(ds.dtypes) == {"uint8"}
        rgba = ds.read()
        assert ((ds.dataset_mask() > 0) == valid).all()
    assert (rgba[3][valid] == 255).all() and (rgba[3][~valid] == 0).all()
    # The reference: the whole image as tools/predict.py reads it, stretched with percentiles
    # of the valid pixels only (the border's zeros would pull the 2nd percentile to 0).
    img = read_image(tiny["scene"], to_rgb=tiny["transforms"].to_rgb, img_channels=BANDS).astype(np.float64)
    pic = np.empty(valid.shape + (3,))
    for i, b in enumerate(bands):
        lo, hi = np.percentile(img[:, :, b][valid], (2, 98))
        pic[:, :, i] = np.clip(np.rint((img[:, :, b] - lo) * 255 / (hi - lo)), 0, 255)
    expect = 0.4 * pic + 0.6 * palette[cls]
    # Rounding: the composite's and the blend's, half a unit each.
    assert np.abs(rgba[:3].transpose(1, 2, 0)[valid] - expect[valid]).max() <= 1.0


def test_decimated_sample_keeps_pixels_and_their_validity(tiny):
    """SceneReader.sample (the overlay's percentiles): at most max_side a side, every pixel
    one of the scene's own (nearest, not interpolated) and valid exactly where it is not no-data."""
    with gdal_env(), SceneReader(tiny["scene"], BANDS) as reader:
        img, valid = reader.sample(40)
    assert max(img.shape[:2]) <= 40 and img.shape[:2] == valid.shape and img.shape[2] == BANDS
    assert img.dtype == tiny["pixels"].dtype
    scene = {tuple(p) for p in tiny["pixels"].reshape(BANDS, -1).T}
    assert all(tuple(p) in scene for p in img.reshape(-1, BANDS))
    np.testing.assert_array_equal(valid, (img != NODATA).any(axis=2))
    assert valid.any() and not valid.all()


def test_float16_probabilities_and_nan_no_data(tiny, tmp_path):
    out = str(tmp_path / "p.tif")
    predict_scene(tiny["scene"], out, dygraph_predict_fn(tiny["model"]), tiny["transforms"], window=WINDOW,
                  stride=STRIDE, probs="float16", progress=False)
    ref = softmax(slide_logits(tiny, tiny["scene"]))
    valid = (tiny["pixels"] != NODATA).any(axis=0)
    with rasterio.open(str(tmp_path / "p_prob.tif")) as ds:
        prob = ds.read()
    assert np.isnan(prob[:, ~valid]).all()
    # float16 keeps 11 significant bits: half a step is 2^-12 relative to the probability (<= 1).
    assert np.abs(prob[:, valid] - ref[:, valid]).max() <= 2.0 ** -12 * 1.01


# ------------------------------------------------------------------ the deploy runners


def _has(module):
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("backend", ["paddle", "onnx"])
def test_deploy_scene_matches_sliding_window(tiny, tmp_path, backend):
    if backend == "onnx" and not (_has("paddle2onnx") and _has("onnxruntime")):
        pytest.skip("paddle2onnx/onnxruntime not installed")
    folder = tiny["tmp"] / "export_none"
    if backend == "onnx":
        folder = tiny["tmp"] / "export_onnx"
        if not folder.exists():
            _load_tool("export").main(["--config", tiny["cfg"], "--model_path", tiny["weights"], "--save_dir",
                                       str(folder), "--output_op", "none", "--format", "onnx"])
        import infer_onnx as runner
    else:
        runner = infer
    out_dir = tmp_path / "out"
    report = runner.main(["--config", str(folder), "--image_path", tiny["scene"], "--save_dir", str(out_dir),
                          "--scene", "--crop_size", *map(str, WINDOW), "--stride", *map(str, STRIDE),
                          "--batch_size", "3", "--cpu_threads", "1", "--scene_overlay"])
    assert runner.exit_status(report) == 0 and len(report.written) == 1
    ref = slide_logits(tiny, tiny["scene"]).argmax(0)
    valid = (tiny["pixels"] != NODATA).any(axis=0)
    with rasterio.open(out_dir / "scene.tif") as ds:
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM
        cls = ds.read(1)
    assert (cls[~valid] == NODATA_CLASS).all() and (cls[valid] == ref[valid]).mean() >= 0.999
    with rasterio.open(out_dir / "scene_overlay.tif") as ds:
        assert ds.count == 4 and ds.transform == TRANSFORM and ((ds.read(4) > 0) == valid).all()


def test_class_id_exports_keep_centre_crops(tiny, tmp_path):
    """An argmax export returns class ids: each pixel takes its centre window's class; where
    only one window covers a pixel that is the sliding-window prediction."""
    out_dir = tmp_path / "out"
    report = infer.main(["--config", str(tiny["tmp"] / "export_argmax"), "--image_path", tiny["scene"],
                         "--save_dir", str(out_dir), "--scene", "--crop_size", *map(str, WINDOW),
                         "--stride", *map(str, WINDOW), "--batch_size", "2", "--cpu_threads", "1"])
    assert infer.exit_status(report) == 0
    ref = slide_logits(tiny, tiny["scene"], WINDOW, WINDOW).argmax(0)
    valid = (tiny["pixels"] != NODATA).any(axis=0)
    with rasterio.open(out_dir / "scene.tif") as ds:
        cls = ds.read(1)
    plan = WindowPlan(*ref.shape, WINDOW, WINDOW, 8)
    single = valid & (plan.count((0, 0) + ref.shape) == 1)  # the last row / column of windows overlaps
    assert single.mean() > 0.5
    assert (cls[single] == ref[single]).mean() >= 0.999 and (cls[~valid] == NODATA_CLASS).all()
    with pytest.raises(ValueError, match="output_op softmax or none"):
        infer.main(["--config", str(tiny["tmp"] / "export_argmax"), "--image_path", tiny["scene"],
                    "--save_dir", str(tmp_path / "p"), "--scene", "--scene_probs", "uint8"])


# ------------------------------------------------------------------ errors that name file and window


def test_wrong_band_count_names_the_file(tiny, tmp_path):
    path = str(tmp_path / "two_bands.tif")
    with rasterio.open(path, "w", driver="GTiff", height=20, width=20, count=2, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as ds:
        ds.write(np.zeros((2, 20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"two_bands\.tif.*2 channels but img_channels=4"):
        predict_scene(path, str(tmp_path / "o.tif"), dygraph_predict_fn(tiny["model"]), tiny["transforms"],
                      window=WINDOW, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["two_bands.tif"]  # no output, no temporary file left


def test_unreadable_window_names_file_and_window(tiny, tmp_path):
    path = str(tmp_path / "broken.tif")
    write_scene(path, h=96, w=96, tiled=True)
    tifffile = pytest.importorskip("tifffile")
    with tifffile.TiffFile(path) as tif:  # tiles of 32x32 in raster order: spoil the middle one (rows 32:64)
        offset, size = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00\xff" * (size // 2))
    with pytest.raises(ValueError, match=r"cannot read window rows \d+:\d+, cols \d+:\d+ of scene .*broken\.tif"):
        predict_scene(path, str(tmp_path / "o.tif"), dygraph_predict_fn(tiny["model"]), tiny["transforms"],
                      window=(32, 32), stride=(32, 32), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["broken.tif"]  # no output, no temporary file left


@pytest.mark.parametrize("kw,message", [(dict(stride=(49, 10)), "larger than the window"),
                                        (dict(batch_size=0), "must be >= 1"),
                                        (dict(probs="float64"), "must be one of uint8, float16")])
def test_bad_options_are_one_clear_error(tiny, tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        predict_scene(tiny["scene"], str(tmp_path / "o.tif"), dygraph_predict_fn(tiny["model"]),
                      tiny["transforms"], **dict(dict(window=WINDOW, progress=False), **kw))
    assert not os.path.exists(tmp_path / "o.tif")


def test_resizing_transforms_are_refused(tiny, tmp_path):
    resize = Compose([Resize(target_size=(16, 16))] + list(tiny["transforms"].transforms), img_channels=BANDS)
    with pytest.raises(ValueError, match="keep the image size"):
        predict_scene(tiny["scene"], str(tmp_path / "o.tif"), dygraph_predict_fn(tiny["model"]), resize,
                      window=WINDOW, progress=False)


# ------------------------------------------------------------------ many scenes over processes


def _launch(tiny, scenes, out, log_dir):
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR", CPU_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir),
           os.path.join(ROOT, "tools", "predict.py"), "--config", tiny["cfg"], "--model_path", tiny["weights"],
           "--image_path", str(scenes), "--save_dir", str(out), "--scene", "--crop_size", "32", "32",
           "--stride", "32", "32", "--num_threads", "1", "--no_fold_bn"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_launch(proc):
    """SIGKILL the launcher and its workers: Paddle starts each worker in its own session
    (os.setsid), so killing the launcher's process group alone would leave them running."""
    tree, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:  # already gone
            pass
    for pid in tree:
        try:
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    end = time.time() + 30
    while time.time() < end and any(_running(pid) for pid in tree[1:]):
        time.sleep(0.05)
    assert not any(_running(pid) for pid in tree[1:]), "a worker outlived SIGKILL"


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _logs(log_dir):
    return "".join(open(os.path.join(log_dir, f), errors="replace").read() for f in sorted(os.listdir(log_dir))
                   if f.startswith("workerlog"))


@pytest.mark.slow
def test_scene_folder_over_two_processes_resumes_after_a_kill(tiny, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    names = [f"s{i}" for i in range(4)]
    for i, n in enumerate(names):
        write_scene(str(scenes / f"{n}.tif"), h=224, w=256, seed=i)
    out = tmp_path / "out"
    finals = [out / f"{n}.tif" for n in names]
    # First run: stopped (the launcher and its workers) as soon as one scene is complete.
    proc = _launch(tiny, scenes, out, tmp_path / "log1")
    deadline = time.time() + 300
    while not any(f.exists() for f in finals) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    _kill_launch(proc)
    done = {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in finals if f.exists()}
    assert 1 <= len(done) < 4, f"the kill came too late to test resuming: {sorted(map(str, done))}"
    # Second run: finishes the rest, leaves the complete ones alone, each scene written once overall.
    proc = _launch(tiny, scenes, out, tmp_path / "log2")
    text = proc.communicate(timeout=300)[0].decode(errors="replace")
    logs = _logs(tmp_path / "log2")
    assert proc.returncode == 0, text[-3000:] + logs[-3000:]
    assert all(f.exists() for f in finals)
    assert {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in done} == done
    rest = sorted(f.stem for f in finals if f not in done)
    assert sorted(re.findall(r"wrote \S+/(s\d)\.tif", logs)) == rest, logs[-3000:]
    assert sorted(re.findall(r"skip \S+/(s\d)\.tif: \S+ exists", logs)) == sorted(f.stem for f in done)
    assert set(re.findall(r"wrote \S+/(s\d)\.tif", _logs(tmp_path / "log1"))) <= {f.stem for f in done}
    assert not [f for f in os.listdir(out) if f.endswith(".part")]
    with rasterio.open(finals[0]) as ds:
        assert ds.crs.to_string() == CRS and ds.shape == (224, 256)


def test_failed_scenes_are_summarised_and_fail_the_run(tiny, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_scene(str(scenes / "good.tif"), h=40, w=40)
    (scenes / "bad.tif").write_bytes(b"II*\x00 not really a tiff")
    status = _load_tool("predict").main([
        "--config", tiny["cfg"], "--model_path", tiny["weights"], "--image_path", str(scenes),
        "--save_dir", str(tmp_path / "out"), "--scene", "--crop_size", "32", "32"])
    assert status == 2
    assert os.listdir(tmp_path / "out") == ["good.tif"]
