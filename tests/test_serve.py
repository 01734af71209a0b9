"""The inference service (deploy/python/serve.py): endpoints, bad input, the pool's bounds.

Two services run for the module, each in a child process on a free loopback
port: a tiny PSPNet exported to ONNX (runtime ``auto`` -> onnxruntime), and a
6-band tiny PSPNet exported with ``--output_op softmax`` to Paddle Inference
(probabilities, multi-band TIFF). Every answer is compared with what
deploy/python/infer.py / infer_onnx.py compute for the same file in this
process; every bad input must get its 4xx and one JSON message, and the next
correct request must still get the right answer.
"""

import asyncio
import io
import json
import os
import re
import struct
import sys
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from serve_helpers import ROOT, export_tiny, multipart, serving

sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))

import infer  # noqa: E402
import serve_pool  # noqa: E402
import serve_runtime  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("paddle2onnx")
import infer_onnx  # noqa: E402

MAX_BYTES = 200_000


def _png(arr):
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _png_claiming(width, height):
    """A PNG whose IHDR claims ``width x height`` (valid signature and CRC, no real pixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat
            + struct.pack(">I", zlib.crc32(b"IDAT" + idat)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def _jpeg_claiming(width, height):
    """SOI, a baseline frame header claiming ``width x height``, EOI."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def _tiff_claiming(width, height):
    """A little-endian TIFF whose first IFD claims ``width x height`` 8-bit grey pixels (one byte of data)."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
               (277, 3, 1), (278, 4, height), (279, 4, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        for tag, kind, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def _tiff(arr):
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", planarconfig="contig")
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_files")
    rng = np.random.RandomState(0)
    img = (rng.rand(24, 40, 3) * 255).astype(np.uint8)
    path = str(tmp / "img.png")
    cv2.imwrite(path, img)
    jpg = str(tmp / "img.jpg")
    cv2.imwrite(jpg, img)
    return {"png_path": path, "png": open(path, "rb").read(), "jpg_path": jpg, "jpg": open(jpg, "rb").read(),
            "tmp": tmp}


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """The ONNX tiny model served with runtime auto, 2 workers, a small body limit; the reference
    predictor runs the runtime auto chose."""
    import serve

    tmp = tmp_path_factory.mktemp("serve_rgb")
    config = export_tiny(tmp, "rgb", onnx=True)
    with serving(config, tmp, "--workers", "2", "--cpu_threads", "1", "--max_bytes", str(MAX_BYTES)) as server:
        server.runtime = server.json("GET", "/metadata")[1]["runtime"]
        server.reference, server.config = serve.make_predictor(config, server.runtime, 1), config
        yield server


@pytest.fixture(scope="module")
def bands6(tmp_path_factory):
    """A 6-band softmax export served by Paddle Inference (auto: the export has no ONNX model)."""
    tmp = tmp_path_factory.mktemp("serve_6")
    config = export_tiny(tmp, "six", bands=6, output_op="softmax")
    reference = infer.Predictor(infer.DeployConfig(config), cpu_threads=1)
    with serving(config, tmp, "--workers", "1") as server:
        server.reference = reference
        yield server


def _reference_map(server, path):
    (_, pred), = server.reference.predict([path])
    return pred


def _assert_correct(server, files):
    """A correct PNG prediction: the class map deploy/python computes for the same file (same runtime)."""
    body, headers = multipart("image", "img.png", files["png"], "image/png")
    status, head, data = server.call("POST", "/predict", body=body, headers=headers)
    assert status == 200, data
    assert head["content-type"] == "image/png"
    out = Image.open(io.BytesIO(data))
    assert out.mode == "P" and out.size == (40, 24)
    expect = _reference_map(server, files["png_path"])
    np.testing.assert_array_equal(np.asarray(out), expect)
    pixels = json.loads(head["x-class-pixels"])
    assert {int(k): v for k, v in pixels.items()} == {int(c): int((expect == c).sum()) for c in np.unique(expect)}


# ------------------------------------------------------------------ endpoints


def test_health_and_metadata(rgb):
    status, health = rgb.json("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["workers"] == 2
    status, meta = rgb.json("GET", "/metadata")
    assert status == 200
    assert meta["input_bands"] == 3 and meta["num_classes"] == 3
    # auto: the fastest of the exact candidates or, of those within noise of it, the first in the
    # preference order; each probed and reported (serve_runtime.py)
    choice = meta["runtime_choice"]
    exact = [c for c in choice["candidates"] if c["exact"]]
    tied = [c["runtime"] for c in exact if c["within_noise"]]
    assert min(exact, key=lambda c: c["ms"])["runtime"] in tied
    assert meta["runtime"] == choice["runtime"] == min(tied, key=serve_runtime.PREFERENCE.index)
    assert {c["runtime"] for c in choice["candidates"]} >= {"onnx"} and "fastest exact" in choice["reason"]
    assert "graph optimisations off" in choice["reference"] and choice["depth"] > 0 and choice["fan_in"] > 0
    # timed with the service's two workers calling at once, as under load
    assert choice["workers"] == 2 and "2 predictors running it at once" in choice["reason"]
    assert [c["id"] for c in meta["classes"]] == [0, 1, 2]
    assert meta["classes"][1]["color"] == [128, 0, 0]  # the palette infer.py's PNGs use
    assert meta["probabilities"] is False and meta["limits"]["max_bytes"] == MAX_BYTES


def test_predict_png_multipart_and_raw_body(rgb, files):
    _assert_correct(rgb, files)
    status, head, data = rgb.call("POST", "/predict", body=files["png"], headers={"Content-Type": "image/png"})
    assert status == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), _reference_map(rgb, files["png_path"]))


def test_concurrent_requests_each_get_their_own_answer(rgb, files, tmp_path):
    """Requests of two sizes at once (which the pool may batch by size): each answer is its image's."""
    rng = np.random.RandomState(3)
    imgs = [(rng.rand(24, 40, 3) * 255).astype(np.uint8) for _ in range(3)] + \
           [(rng.rand(32, 48, 3) * 255).astype(np.uint8) for _ in range(3)]
    paths = []
    for i, img in enumerate(imgs):
        paths.append(str(tmp_path / f"c{i}.png"))
        cv2.imwrite(paths[-1], img)
    answers = [None] * len(paths)

    def post(i):
        answers[i] = rgb.call("POST", "/predict", body=open(paths[i], "rb").read(),
                              headers={"Content-Type": "image/png"})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for path, (status, head, data) in zip(paths, answers):
        assert status == 200, data
        assert 1 <= int(head["x-batch-size"]) <= 8 and set(dict(
            kv.split("=") for kv in head["x-timing"].split(","))) == {"queue", "prepare", "run", "finish"}
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), _reference_map(rgb, path))


def test_predict_json_counts(rgb, files):
    status, out = rgb.json("POST", "/predict?format=json", body=files["jpg"],
                           headers={"Content-Type": "application/octet-stream"})
    assert status == 200
    expect = _reference_map(rgb, files["jpg_path"])
    assert (out["height"], out["width"], out["runtime"]) == (24, 40, rgb.runtime)
    assert {c["id"]: c["pixels"] for c in out["classes"]} == {
        int(c): int((expect == c).sum()) for c in np.unique(expect)}
    assert sum(c["share"] for c in out["classes"]) == pytest.approx(1.0)


def test_page_is_served(rgb):
    status, head, body = rgb.call("GET", "/")
    assert status == 200 and head["content-type"].startswith("text/html")
    assert b'id="file"' in body and b'fetch("predict"' in body


def test_one_log_line_per_request(rgb):
    before = rgb.log().count("[SERVE] 127.0.0.1 GET /health")
    rgb.call("GET", "/health")
    rgb.call("GET", "/health")
    for _ in range(100):  # the line is written as the answer leaves: poll briefly, no timing asserted
        if rgb.log().count("[SERVE] 127.0.0.1 GET /health") >= before + 2:
            break
        time.sleep(0.05)
    assert rgb.log().count("[SERVE] 127.0.0.1 GET /health") == before + 2
    line = [x for x in rgb.log().splitlines() if "GET /health" in x][-1]
    assert re.search(r"\[SERVE\] 127\.0\.0\.1 GET /health 200 [0-9.]+ ms pending=\d+$", line), line


# ------------------------------------------------------------------ bad input

BAD = [
    ("not an image", lambda f: (b"hello, this is text and not an image at all", {"Content-Type":
                                                                                  "application/octet-stream"}),
     415, "not an image"),
    ("truncated PNG", lambda f: (f["png"][:len(f["png"]) // 2], {"Content-Type": "image/png"}), 400, "truncated"),
    ("truncated JPEG", lambda f: (f["jpg"][:len(f["jpg"]) // 2], {"Content-Type": "image/jpeg"}), 400, "truncated"),
    ("1x1 image", lambda f: (_png(np.zeros((1, 1, 3), np.uint8)), {"Content-Type": "image/png"}), 400,
     "both sides must be at least 16"),
    ("PNG header 100000x100000", lambda f: (_png_claiming(100000, 100000), {"Content-Type": "image/png"}), 413,
     "100000x100000"),
    ("JPEG header 65000x65000", lambda f: (_jpeg_claiming(65000, 65000), {"Content-Type": "image/jpeg"}),
     413, "65000x65000"),
    ("TIFF header 100000x100000", lambda f: (_tiff_claiming(100000, 100000), {"Content-Type": "image/tiff"}),
     413, "100000x100000"),
    ("5 bands for a 3-band model", lambda f: (_tiff(np.zeros((24, 40, 5), np.uint8)), {"Content-Type": "image/tiff"}),
     400, "5 channels"),
    ("empty body", lambda f: (b"", {"Content-Type": "image/png"}), 400, "body is empty"),
    ("wrong content type", lambda f: (f["png"], {"Content-Type": "text/plain"}), 415, "Content-Type text/plain"),
    ("multipart without the image field", lambda f: multipart("file", "img.png", f["png"]), 400,
     "no file field 'image'"),
    ("body over --max_bytes", lambda f: (b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES), {"Content-Type": "image/png"}),
     413, "larger than 200,000 bytes"),
    ("BMP", lambda f: (cv2.imencode(".bmp", np.zeros((24, 40, 3), np.uint8))[1].tobytes(),
                       {"Content-Type": "application/octet-stream"}), 415, "the upload is a BMP file"),
]


@pytest.mark.parametrize("name, make, status, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_4xx_and_the_service_goes_on(rgb, files, name, make, status, message):
    body, headers = make(files)
    got, head, data = rgb.call("POST", "/predict", body=body, headers=headers)
    assert got == status, data
    assert head["content-type"] == "application/json"
    answer = json.loads(data)
    assert set(answer) == {"error", "status"} and answer["status"] == status
    assert message in answer["error"]
    assert "Traceback" not in answer["error"]
    _assert_correct(rgb, files)


@pytest.mark.parametrize("path, status, message", [
    ("/predict?format=xml", 400, "format=xml is not one of png, json, npy"),
    ("/predict?format=npy", 400, "output_op: argmax"),
])
def test_bad_query(rgb, files, path, status, message):
    got, answer = rgb.json("POST", path, body=files["png"], headers={"Content-Type": "image/png"})
    assert got == status and message in answer["error"]


def test_unknown_route_and_method_are_json(rgb):
    assert rgb.json("GET", "/nowhere") == (404, {"error": "GET /nowhere: Not Found", "status": 404})
    assert rgb.json("GET", "/predict")[0] == 405


# ------------------------------------------------------------------ multi-band, probabilities, Paddle Inference


def test_multiband_tiff_probabilities(bands6, files):
    rng = np.random.RandomState(1)
    arr = (rng.rand(24, 40, 6) * 65535).astype(np.uint16)
    path = str(files["tmp"] / "six.tif")
    tifffile.imwrite(path, arr, photometric="minisblack", planarconfig="contig")
    data = open(path, "rb").read()
    status, meta = bands6.json("GET", "/metadata")
    assert meta["runtime"] == "paddle" and meta["input_bands"] == 6 and meta["probabilities"] is True
    assert "no ONNX model" in meta["runtime_choice"]["reason"] and meta["runtime_choice"]["candidates"] == []
    status, head, body = bands6.call("POST", "/predict", body=data, headers={"Content-Type": "image/tiff"})
    assert status == 200, body
    expect = _reference_map(bands6, path)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), expect)
    status, head, body = bands6.call("POST", "/predict?format=npy", body=data, headers={"Content-Type": "image/tiff"})
    assert status == 200, body
    probs = np.load(io.BytesIO(body))
    assert probs.shape == (3, 24, 40) and probs.dtype == np.float32
    # float32 softmax over 3 classes: the sum is 1 to a few ulp
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=0), expect)
    # a 3-band image for the 6-band model
    status, answer = bands6.json("POST", "/predict", body=files["png"], headers={"Content-Type": "image/png"})
    assert status == 400 and "img_channels=6" in answer["error"]


def test_openvino_runtime_matches_onnxruntime(tmp_path, files):
    """OpenVINO (float32 pinned) on the exported ONNX gives onnxruntime's logits and the same classes."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")
    import infer_openvino
    from serve_helpers import export_tiny

    config = export_tiny(tmp_path, "logits", onnx=True, output_op="none")
    cfg = infer.DeployConfig(config, "onnx")
    data = infer_onnx.OnnxPredictor(cfg, cpu_threads=1).preprocess(files["png_path"])
    ref = infer_onnx.OnnxPredictor(cfg, cpu_threads=1).run(data["img"][None])
    got = infer_openvino.OpenVinoPredictor(cfg, cpu_threads=1).run(data["img"][None])
    assert got.shape == ref.shape == (1, 3, 24, 40)
    # Both sum the same float32 products in other orders: differences are rounding, a few ulp of the
    # largest activations through ~20 layers; 1e-4 of the logits' scale is the deploy benchmark's bar.
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        infer_openvino.OpenVinoPredictor(cfg, precision="int8")


def test_openvino_predictors_that_share_the_cores_are_not_pinned(tmp_path, monkeypatch):
    """OpenVINO pins a compiled model's threads to cores, the same cores for every model in a process, so
    serve.py's one-thread workers would take turns on one core: a predictor that does not own every core
    is compiled unpinned, one that does keeps OpenVINO's placement."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")
    import infer_openvino
    from serve_helpers import export_tiny

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert infer_openvino.compile_config(1)["ENABLE_CPU_PINNING"] is False
    assert infer_openvino.compile_config(2)["ENABLE_CPU_PINNING"] is False
    assert "ENABLE_CPU_PINNING" not in infer_openvino.compile_config(4)
    assert "ENABLE_CPU_PINNING" not in infer_openvino.compile_config(0)  # 0 = all cores
    assert infer_openvino.compile_config(1)["INFERENCE_NUM_THREADS"] == 1
    monkeypatch.undo()
    if (os.cpu_count() or 1) > 1:  # the setting reaches the compiled model
        cfg = infer.DeployConfig(export_tiny(tmp_path, "logits", onnx=True, output_op="none"), "onnx")
        compiled = infer_openvino.OpenVinoPredictor(cfg, cpu_threads=1).compiled
        assert compiled.get_property("ENABLE_CPU_PINNING") is False


def test_int8_quantised_export_runs_in_the_onnx_predictor(tmp_path, files):
    """deploy/python/quantize_onnx.py: a copy of the export naming model_int8.onnx, run unchanged."""
    pytest.importorskip("ml_dtypes", reason="onnxruntime's quantiser needs ml_dtypes (pip install ml_dtypes)")
    import quantize_onnx
    import yaml
    from serve_helpers import export_tiny

    config = export_tiny(tmp_path, "q", onnx=True, output_op="none")
    rng = np.random.RandomState(0)
    calib = [(rng.rand(24, 40, 3) * 255).astype(np.float32) for _ in range(4)]
    out = quantize_onnx.quantize_export(config, calib, str(tmp_path / "int8"))
    meta = yaml.safe_load(open(out))["Deploy"]["onnx"]
    assert meta["model"] == "model_int8.onnx" and meta["int8"]["calibration_images"] == 4
    cfg = infer.DeployConfig(out, "onnx")
    data = infer_onnx.OnnxPredictor(cfg, cpu_threads=1).preprocess(files["png_path"])
    got = infer_onnx.OnnxPredictor(cfg, cpu_threads=1).run(data["img"][None])
    ref = infer_onnx.OnnxPredictor(infer.DeployConfig(config, "onnx"), cpu_threads=1).run(data["img"][None])
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert "QuantizeLinear" in open(cfg.onnx_file, "rb").read().decode("latin-1")
    import serve

    assert serve.Model(cfg, "onnx", 3).precision == "int8"
    assert serve.Model(infer.DeployConfig(out, "paddle"), "paddle", 3).precision == "float32"
    assert serve.Model(infer.DeployConfig(config, "onnx"), "onnx", 3).precision == "float32"
    with pytest.raises(ValueError, match="is the export folder itself"):
        quantize_onnx.quantize_export(config, calib, os.path.dirname(config))
    with pytest.raises(ValueError, match="no image_path / crop_size"):
        quantize_onnx.training_windows(os.path.join(os.path.dirname(os.path.dirname(config)), "tiny.yml"), 2)


# ------------------------------------------------------------------ the pool (in-process, no timing)


def test_pool_answers_full_when_every_slot_is_taken():
    release = threading.Event()
    pool = serve_pool.PredictorPool(["p0"], max_queue=1, timeout_s=30)

    def blocked(predictor):
        release.wait(30)
        return predictor

    async def scenario():
        first = asyncio.ensure_future(pool.submit(blocked))
        second = asyncio.ensure_future(pool.submit(blocked))  # waits in the queue
        await asyncio.sleep(0.05)
        assert pool.pending == 2
        with pytest.raises(serve_pool.PoolFull) as e:
            await pool.submit(blocked)
        assert e.value.retry_after >= 1 and "busy" in str(e.value)
        release.set()
        assert await first == "p0" and await second == "p0"
        assert pool.pending == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.close()


def test_pool_timeout_keeps_the_slot_until_the_job_ends():
    release = threading.Event()
    pool = serve_pool.PredictorPool(["p0"], max_queue=0, timeout_s=0.2)

    async def scenario():
        with pytest.raises(serve_pool.PoolTimeout, match="no answer within 0.2 s"):
            await pool.submit(lambda p: release.wait(30))
        # the job still runs: its slot is taken, so the next request is refused, not queued
        assert pool.pending == 1
        with pytest.raises(serve_pool.PoolFull):
            await pool.submit(lambda p: p)
        release.set()
        for _ in range(200):
            if pool.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.pending == 0
        assert await pool.submit(lambda p: p) == "p0"

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.close()


class _Doubler:
    """A predictor that records the batch shapes it is called with and doubles its input."""

    def __init__(self):
        self.calls = []

    def run(self, batch):
        self.calls.append(batch.shape)
        return batch * 2


class _Item(serve_pool.BatchJob):
    def __init__(self, value, side=2, bad=False):
        self.value, self.side, self.bad = value, side, bad

    def prepare(self):
        if self.bad:
            raise ValueError(f"item {self.value} cannot be decoded")
        return (self.side,), np.full((self.side,), self.value, np.float32)

    def finish(self, output, batch_size, call_ms):
        assert call_ms >= 0
        return float(output[0]), batch_size


def test_pool_batches_waiting_jobs_of_one_shape():
    """Jobs queued behind a busy worker run as one call per input shape, each answered with its own row;
    a job that cannot be prepared fails alone; a batch takes at most max_batch jobs."""
    release = threading.Event()
    predictor = _Doubler()
    pool = serve_pool.PredictorPool([predictor], max_queue=8, timeout_s=30, max_batch=4)

    async def scenario():
        busy = asyncio.ensure_future(pool.submit(lambda p: release.wait(30)))
        await asyncio.sleep(0.05)
        items = [_Item(1), _Item(2), _Item(3, side=3), _Item(4, bad=True), _Item(5)]
        futures = [asyncio.ensure_future(pool.submit(item)) for item in items]
        await asyncio.sleep(0.05)
        assert pool.pending == 6
        release.set()
        await busy
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert results[:3] == [(2.0, 2), (4.0, 2), (6.0, 1)]
        assert isinstance(results[3], ValueError) and "item 4" in str(results[3])
        assert results[4] == (10.0, 1)  # the fifth job is past max_batch: the next call
        assert predictor.calls == [(2, 2), (1, 3), (1, 2)]
        assert pool.batches == {2: 1, 1: 2} and pool.pending == 0
        # a lone job runs at once, alone
        assert await pool.submit(_Item(7)) == (14.0, 1)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.close()


def test_pool_shares_the_queue_among_idle_workers():
    """Two workers and two waiting jobs: one job each (side by side), not both in one call."""
    release = threading.Event()
    predictors = [_Doubler(), _Doubler()]
    pool = serve_pool.PredictorPool(predictors, max_queue=8, timeout_s=30, max_batch=8)

    async def scenario():
        busy = [asyncio.ensure_future(pool.submit(lambda p: release.wait(30))) for _ in range(2)]
        await asyncio.sleep(0.05)
        futures = [asyncio.ensure_future(pool.submit(_Item(v))) for v in (1, 2)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*busy)
        assert await asyncio.gather(*futures) == [(2.0, 1), (4.0, 1)]
        # each call took one job (which worker ran the second depends on the scheduler)
        assert sorted(c for p in predictors for c in p.calls) == [(1, 2), (1, 2)]

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.close()


def test_pool_frees_a_jobs_slot_before_answering_it():
    """A client may send its next request the moment it has an answer, while the rest of its batch is still
    being finished: the answered job no longer counts against the queue's bound (else clients within the
    bound are refused 503)."""
    release, hold = threading.Event(), threading.Event()
    pool = serve_pool.PredictorPool([_Doubler()], max_queue=2, timeout_s=30, max_batch=4)

    class Slow(_Item):
        def finish(self, output, batch_size, call_ms):
            hold.wait(30)
            return super().finish(output, batch_size, call_ms)

    async def scenario():
        busy = asyncio.ensure_future(pool.submit(lambda p: release.wait(30)))
        await asyncio.sleep(0.05)
        first = asyncio.ensure_future(pool.submit(_Item(1)))
        second = asyncio.ensure_future(pool.submit(Slow(2)))
        await asyncio.sleep(0.05)
        assert pool.pending == 3
        release.set()
        await busy
        assert await first == (2.0, 2)
        assert pool.pending == 1  # only the job still being finished
        hold.set()
        assert await second == (4.0, 2)
        assert pool.pending == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        hold.set()
        pool.close()


def _asgi_post(app, body, content_type="image/png"):
    """``(status, headers, body)`` of one POST /predict sent straight to the ASGI app."""
    sent = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, data


@pytest.mark.parametrize("error, status, header", [
    (serve_pool.PoolFull(3, 18), 503, ("retry-after", "3")),
    (serve_pool.PoolTimeout("no answer within 30 s (serve.py --timeout_s)"), 504, None),
])
def test_pool_refusals_are_json_answers(files, error, status, header):
    """The service's answer when the pool refuses: 503 + Retry-After when full, 504 on a timeout."""
    import types

    import serve
    from serve_input import ImageLimits

    class RefusingPool:
        pending, workers, max_queue, timeout_s = 18, 2, 16, 30.0

        async def submit(self, job):
            raise error

    model = types.SimpleNamespace(cfg=types.SimpleNamespace(output_op="argmax"), img_channels=3)
    app = serve.create_app(model, RefusingPool(), ImageLimits())
    got, head, data = _asgi_post(app, files["png"])
    assert got == status and head["content-type"] == "application/json"
    assert json.loads(data) == {"error": str(error), "status": status}
    if header:
        assert head[header[0]] == header[1]


def test_pool_arguments_are_checked():
    with pytest.raises(ValueError, match="at least one predictor"):
        serve_pool.PredictorPool([], 1, 1)
    with pytest.raises(ValueError, match="--max_queue must be >= 0"):
        serve_pool.PredictorPool(["p"], -1, 1)
    with pytest.raises(ValueError, match="--max_batch must be >= 1"):
        serve_pool.PredictorPool(["p"], 1, 1, max_batch=0)


def test_malloc_arenas_are_capped_unless_the_user_set_them(monkeypatch):
    import platform

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert serve_pool.limit_malloc_arenas(2) is False  # the user's setting stands
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert serve_pool.limit_malloc_arenas(2) is (platform.libc_ver()[0] == "glibc")


def test_bad_config_is_one_error_line(tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "python", "serve.py"), "--config",
                           str(tmp_path / "none" / "deploy.yaml"), "--port", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: deploy.yaml not found") and "Traceback" not in proc.stderr


def test_load_script_runs_and_counts(rgb, tmp_path):
    """benchmarks/serve_load.py end to end, briefly (its figures are in docs/benchmarks.md; no timing here)."""
    import subprocess

    image = tmp_path / "img.png"
    cv2.imwrite(str(image), (np.random.RandomState(0).rand(24, 40, 3) * 255).astype(np.uint8))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "serve_load.py"), "--config",
                           rgb.config, "--image", str(image), "--clients", "4", "--duration", "2",
                           "--baseline_s", "1", "--max_requests", "400", "--runtime", rgb.runtime,
                           "--also_max_batch", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in proc.stdout.splitlines()
            if line.startswith("| ") and "run" not in line.split("|")[1]}
    assert set(rows) == {"sequential, in process", "sequential, HTTP", "concurrent, HTTP, max_batch 8",
                         "concurrent, HTTP, max_batch 1"}
    for name in ("concurrent, HTTP, max_batch 8", "concurrent, HTTP, max_batch 1"):
        clients, rps, _, _, ok, _, errors = [c.strip() for c in rows[name][:7]]
        assert clients == "4" and float(rps) > 0 and int(ok) > 0 and errors == "0"
        assert re.match(r"queue [\d.]+, prepare [\d.]+, run [\d.]+, finish [\d.]+, rest -?[\d.]+; batch [\d.]+",
                        rows[name][-1].strip())
    assert "service RSS" in proc.stdout and f" on {rgb.runtime} (2 worker(s)" in proc.stdout
