"""An HTTP inference service for an exported model, with a web page.

    python deploy/python/serve.py --config output/onnx_model/deploy.yaml --host 127.0.0.1 --port 8866

Endpoints (deploy/README.md has curl examples):

* ``POST /predict``: an image (PNG, JPEG, TIFF; multi-band TIFF for a
  multi-band model) as the multipart field ``image`` or as the raw body.
  Answers the class map as a palette PNG (default; per-class pixel counts in
  the ``X-Class-Pixels`` header), ``?format=json`` per-class pixel counts and
  shares, ``?format=npy`` the class probabilities ``[C, H, W]`` float32 as a
  ``.npy`` file (exports with ``--output_op softmax`` or ``none``).
* ``GET /health``: ``{"status": "ok"}`` with the queue state.
* ``GET /metadata``: classes (names, colours), input bands, runtime, limits.
* ``GET /``: the web page (static/index.html): pick or drop an image, see the
  overlay, legend and per-class shares.

The model runs on a small pool of predictors behind a bounded queue
(serve_pool.py): when it is full the answer is 503 with ``Retry-After``;
requests of one image size that wait together run as one batch (``--max_batch``).
``--runtime auto`` (the default) probes the installed runtimes at start-up and
serves on the fastest one whose logits match a reference within float32
rounding (serve_runtime.py); ``/metadata`` reports the choice and its figures.
Uploads are checked before decoding (serve_input.py): every bad input gets a
4xx with one JSON ``{"error": ...}`` message. Pre- and post-processing are
deploy/python/infer.py's (``BasePredictor.preprocess`` / ``postprocess``), so
the service answers exactly what infer.py writes for the same file. Starlette
on uvicorn (ASGI); one log line per request.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence

import numpy as np

# A broken upload is answered with a JSON message; OpenCV's own warning about it is noise in the log.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from infer import BasePredictor, DeployConfig  # noqa: E402
from serve_input import (HOW_TO_SEND, RAW_CONTENT_TYPES, ImageLimits, RequestError, check_size,  # noqa: E402
                         decode_upload, header_size)
from serve_pool import BatchJob, PoolFull, PoolTimeout, PredictorPool, limit_malloc_arenas  # noqa: E402
from serve_runtime import PROBE_ROUNDS, RuntimeChoice, auto_runtime  # noqa: E402
from paddleseg_ext.transforms.functional import reverse_transform  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.utils.logger import get_logger  # noqa: E402
from paddleseg_ext.utils.visualize import get_color_map_list, get_pseudo_color_map  # noqa: E402

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RUNTIMES = ("auto", "onnx", "paddle", "paddle-mkldnn", "openvino")
FORMATS = ("png", "json", "npy")


def make_predictor_for(cfg: DeployConfig, runtime: str, cpu_threads: int) -> BasePredictor:
    """One predictor of ``cfg`` for ``runtime`` (``onnx``: onnxruntime, ``paddle``: Paddle Inference,
    ``paddle-mkldnn``: Paddle Inference with oneDNN kernels, ``openvino``: OpenVINO in float32)."""
    if runtime == "onnx":
        from infer_onnx import OnnxPredictor

        return OnnxPredictor(cfg, cpu_threads=cpu_threads)
    if runtime == "openvino":
        from infer_openvino import OpenVinoPredictor

        return OpenVinoPredictor(cfg, cpu_threads=cpu_threads)
    from infer import Predictor

    return Predictor(cfg, cpu_threads=cpu_threads, enable_mkldnn=runtime == "paddle-mkldnn")


def make_predictor(cfg_path: str, runtime: str, cpu_threads: int) -> BasePredictor:
    """:func:`make_predictor_for` the deploy.yaml at ``cfg_path``."""
    return make_predictor_for(DeployConfig(cfg_path, "paddle" if runtime.startswith("paddle") else "onnx"),
                              runtime, cpu_threads)


def probe_side(cfg: DeployConfig, side: int) -> int:
    """The probe's side: the export's fixed input size when it has one (square probes only then
    when H == W), else ``side``."""
    shape = cfg.dic.get("input_shape") or []
    fixed = [int(v) for v in shape[2:4] if isinstance(v, int) and v > 0]
    return fixed[0] if len(fixed) == 2 and fixed[0] == fixed[1] else side


def fixed_batch(cfg: DeployConfig) -> Optional[int]:
    """The batch size the export fixes (``--input_shape N ...`` with N > 0), else None."""
    shape = cfg.dic.get("input_shape") or []
    return int(shape[0]) if shape and isinstance(shape[0], int) and shape[0] > 0 else None


#: ``--workers``: predictors running requests side by side.
DEFAULT_WORKERS = 2
#: ``--probe_batch``: images per timed call of ``auto``. Under 16 clients the default service's
#: workers ran batches of 4.3 images on average (benchmarks/serve_load.py), and there the runtimes
#: rank as under load: on the quick-start model OpenVINO served 1.28x onnxruntime's requests/s, and
#: led by 1.26-1.33x in 14-15 of 15 rounds of a 4-image probe, by 1.03-1.16x and within noise (10 of
#: 15) of a 1-image probe.
DEFAULT_PROBE_BATCH = 4


def pick_runtime(cfg: DeployConfig, runtime: str, threads: int = 1, side: int = 64,
                 rounds: int = PROBE_ROUNDS, workers: int = 1, batch: int = 1) -> RuntimeChoice:
    """The runtime to serve on: ``runtime`` as given, or for ``auto`` the fastest exact one measured
    on this machine in ``rounds`` timed rounds (serve_runtime.auto_runtime, which says why in ``reason``)
    of ``batch`` images per call (the export's own batch size where it fixes one), with ``workers``
    predictors running each timed call at once, as the service's workers do under load."""
    if runtime != "auto":
        return RuntimeChoice(runtime, f"--runtime {runtime} (given)")
    return auto_runtime(cfg, threads, probe_side(cfg, side), batch=fixed_batch(cfg) or batch, runs=rounds,
                        workers=workers)


class Model:
    """The exported model as the service sees it: classes, colours, and one prediction.

    Args:
        cfg: the deploy config.
        runtime: ``onnx``, ``openvino`` or ``paddle``.
        num_classes: classes of the output (deploy.yaml's ``num_classes``; older exports: from a
            probability output, else unknown).
        choice: how the runtime was chosen (``/metadata``).
    """

    def __init__(self, cfg: DeployConfig, runtime: str, num_classes: Optional[int],
                 choice: Optional[RuntimeChoice] = None) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.choice = choice or RuntimeChoice(runtime, f"--runtime {runtime} (given)")
        self.num_classes = num_classes
        self.img_channels = cfg.transforms.img_channels
        # deploy/python/quantize_onnx.py records ``onnx.int8`` when model.onnx became model_int8.onnx;
        # Paddle Inference still runs the float32 Paddle model of the same folder.
        int8 = runtime in ("onnx", "openvino") and bool((cfg.dic.get("onnx") or {}).get("int8"))
        self.precision = "int8" if int8 else "float32"
        names = cfg.dic.get("class_names")
        n = num_classes or 0
        self.class_names = (list(names) if isinstance(names, list) and len(names) == n
                            else [f"class {i}" for i in range(n)])
        self.palette = get_color_map_list(256)
        # infer.py's pre- and post-processing (they depend on the config only, not on a runtime)
        self.processing = BasePredictor(cfg)

    def classes(self) -> List[Dict[str, Any]]:
        return [{"id": i, "name": name, "color": self.palette[3 * i:3 * i + 3]}
                for i, name in enumerate(self.class_names)]

    def finish(self, out: np.ndarray, trans_info: List[Any], fmt: str) -> Dict[str, Any]:
        """The answer from one image's raw output ``out`` (``[C, H, W]`` or ``[H, W]``)."""
        pred = self.processing.postprocess(out, trans_info)
        counts = np.bincount(pred.ravel(), minlength=self.num_classes or 0)
        result: Dict[str, Any] = {"counts": counts, "height": pred.shape[0], "width": pred.shape[1]}
        if fmt == "png":
            buf = io.BytesIO()
            get_pseudo_color_map(pred, self.palette).save(buf, "PNG")
            result["body"] = buf.getvalue()
        elif fmt == "npy":
            probs = out if self.cfg.output_op == "softmax" else _softmax(out)
            probs = reverse_transform(probs.transpose(1, 2, 0), trans_info, "bilinear")
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(probs.reshape(pred.shape + (-1,)).transpose(2, 0, 1),
                                              dtype=np.float32))
            result["body"] = buf.getvalue()
        return result


class ServeJob(BatchJob):
    """One request's image through the pool: decoded and pre-processed on a worker, batched with
    other requests of its input size, answered in ``fmt``; ``timing`` records where its time went
    (ms: waiting in the queue, decode + preprocess, the predictor call it shared, postprocess +
    encode; the other jobs of its batch are prepared and finished on the same worker before
    and after the call), sent back as ``X-Timing``.
    """

    def __init__(self, model: Model, buf: bytes, name: str, fmt: str, limits: ImageLimits) -> None:
        self.model, self.buf, self.name, self.fmt, self.limits = model, buf, name, fmt, limits
        self.created = time.perf_counter()
        self.timing: Dict[str, float] = {}
        self.trans_info: List[Any] = []

    def prepare(self) -> tuple:
        start = time.perf_counter()
        self.timing["queue"] = 1e3 * (start - self.created)
        img = decode_upload(self.buf, self.name, self.model.img_channels, self.limits)
        data = self.model.processing.preprocess(img)
        self.trans_info = data["trans_info"]
        arr = np.ascontiguousarray(data["img"], dtype=np.float32)
        self.timing["prepare"] = 1e3 * (time.perf_counter() - start)
        return arr.shape, arr

    def finish(self, output: np.ndarray, batch_size: int, call_ms: float) -> Dict[str, Any]:
        start = time.perf_counter()
        self.timing["run"] = call_ms
        result = self.model.finish(output, self.trans_info, self.fmt)
        self.timing["finish"] = 1e3 * (time.perf_counter() - start)
        result["ms"] = self.timing["prepare"] + self.timing["run"] + self.timing["finish"]
        result["batch"] = batch_size
        result["timing"] = self.timing
        return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def class_pixels(counts: np.ndarray) -> Dict[int, int]:
    """``{class id: pixels}`` for the classes present."""
    return {int(i): int(c) for i, c in enumerate(counts) if c}


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The request body, refused with 413 past ``max_bytes`` (before reading it when the
    ``Content-Length`` says so, else as soon as the stream passes the limit)."""
    declared = request.headers.get("content-length")
    too_big = RequestError(413, f"the request body is larger than {max_bytes:,} bytes (serve.py --max_bytes)")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def upload_bytes(request: Any, max_bytes: int) -> tuple:
    """``(bytes, name)`` of the uploaded image: the multipart field ``image``, or the raw body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, max_bytes)
    if not body:
        raise RequestError(400, f"the request has no image: the body is empty; {HOW_TO_SEND}")
    if ctype == "multipart/form-data":
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=4, max_fields=16,
                                         max_part_size=max_bytes).parse()
        except MultiPartException as e:
            raise RequestError(400, f"the multipart body cannot be parsed: {e.message}") from None
        field = form.get("image")
        if field is None or isinstance(field, str):
            fields = ", ".join(sorted(form.keys())) or "none"
            raise RequestError(400, f"the multipart body has no file field 'image' (fields: {fields}); "
                                    f"{HOW_TO_SEND}")
        data = await field.read()
        return data, f"upload {field.filename or 'image'!r}"
    if ctype and ctype not in RAW_CONTENT_TYPES:
        raise RequestError(415, f"Content-Type {ctype} is not an image upload; {HOW_TO_SEND}")
    return body, "upload (request body)"


def create_app(model: Model, pool: PredictorPool, limits: ImageLimits) -> Any:
    """The Starlette application serving ``model`` through ``pool``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    log = get_logger()

    def error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status, headers=headers)

    async def predict(request: Request) -> Response:
        fmt = request.query_params.get("format", "png").lower()
        if fmt not in FORMATS:
            raise RequestError(400, f"format={fmt} is not one of {', '.join(FORMATS)}")
        if fmt == "npy" and model.cfg.output_op == "argmax":
            raise RequestError(400, "this export returns class indices only (deploy.yaml output_op: argmax); "
                                    "for probabilities re-export with tools/export.py --output_op softmax")
        buf, name = await upload_bytes(request, limits.max_bytes)
        _, w, h = header_size(buf)  # cheap: refuse a huge or broken image before it queues
        check_size(w, h, limits)

        out = await pool.submit(ServeJob(model, buf, name, fmt, limits))
        pixels = class_pixels(out["counts"])
        headers = {"X-Class-Pixels": json.dumps(pixels, separators=(",", ":")),
                   "X-Inference-Ms": f"{out['ms']:.1f}", "X-Batch-Size": str(out["batch"]),
                   "X-Timing": ",".join(f"{k}={v:.2f}" for k, v in out["timing"].items())}
        if fmt == "png":
            return Response(out["body"], media_type="image/png", headers=headers)
        if fmt == "npy":
            return Response(out["body"], media_type="application/octet-stream", headers=headers)
        total = out["height"] * out["width"]
        names = model.class_names
        return JSONResponse({
            "height": out["height"], "width": out["width"], "runtime": model.runtime, "ms": round(out["ms"], 2),
            "batch": out["batch"],
            "classes": [{"id": i, "name": names[i] if i < len(names) else f"class {i}", "pixels": c,
                         "share": c / total} for i, c in pixels.items()],
        })

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "pending": pool.pending, "workers": pool.workers,
                             "max_queue": pool.max_queue,
                             "batches": {str(k): v for k, v in sorted(getattr(pool, "batches", {}).items())}})

    async def metadata(request: Request) -> Response:
        return JSONResponse({
            "model": model.cfg.path, "runtime": model.runtime, "precision": model.precision,
            "runtime_choice": model.choice.to_dict(),
            "input_bands": model.img_channels,
            "num_classes": model.num_classes, "classes": model.classes(), "output_op": model.cfg.output_op,
            "probabilities": model.cfg.output_op != "argmax", "formats": list(FORMATS),
            "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                       "max_side": limits.max_side, "min_side": limits.min_side},
            "workers": pool.workers, "max_queue": pool.max_queue, "timeout_s": pool.timeout_s,
            "max_batch": getattr(pool, "max_batch", 1),
        })

    async def page(request: Request) -> Response:
        return FileResponse(os.path.join(STATIC, "index.html"))

    async def request_error(request: Request, e: RequestError) -> Response:
        return error(e.status, e.message, e.headers)

    async def pool_full(request: Request, e: PoolFull) -> Response:
        return error(503, str(e), {"Retry-After": str(e.retry_after)})

    async def pool_timeout(request: Request, e: PoolTimeout) -> Response:
        return error(504, str(e))

    async def http_error(request: Request, e: HTTPException) -> Response:
        return error(e.status_code, f"{request.method} {request.url.path}: {e.detail}", e.headers)

    async def server_error(request: Request, e: Exception) -> Response:
        log.exception("[SERVE] %s %s failed", request.method, request.url.path)
        return error(500, f"internal error: {type(e).__name__}: {e}")

    app = Starlette(
        routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health),
                Route("/metadata", metadata), Route("/", page), Mount("/static", StaticFiles(directory=STATIC))],
        exception_handlers={RequestError: request_error, PoolFull: pool_full, PoolTimeout: pool_timeout,
                            HTTPException: http_error, Exception: server_error})

    async def logged(scope: dict, receive: Any, send: Any) -> None:
        """``app`` with one log line per HTTP request (client, method, path, status, ms, queue)."""
        if scope["type"] != "http":
            return await app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_status)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            log.info("[SERVE] %s %s %s%s %d %.1f ms pending=%d", (scope.get("client") or ("-",))[0],
                     scope["method"], scope["path"], f"?{query}" if query else "", status[0],
                     1e3 * (time.perf_counter() - start), pool.pending)

    return logged


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="HTTP inference service (and web page) for an exported model")
    p.add_argument("--config", required=True, help="deploy.yaml written by tools/export.py (or its folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="auto: the fastest runtime whose logits match onnxruntime's unoptimised graph within "
                        "float32 rounding, measured at start-up (of runtimes within noise of the fastest: "
                        "onnx, openvino, paddle-mkldnn, paddle, in that order; Paddle Inference for an "
                        "export without model.onnx); /metadata says why")
    p.add_argument("--probe_side", type=int, default=64,
                   help="auto: side of the square probe image the runtimes are checked and timed on "
                        "(an export with a fixed input size is probed at that size)")
    p.add_argument("--probe_batch", type=int, default=DEFAULT_PROBE_BATCH,
                   help="auto: images per timed call, at most --max_batch (the batch the workers run under "
                        "load, where the runtimes rank as they serve)")
    p.add_argument("--probe_rounds", type=int, default=PROBE_ROUNDS,
                   help="auto: timed rounds per runtime (fewer: a faster start, more runtimes within noise)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="predictors running requests in parallel")
    p.add_argument("--cpu_threads", type=int, default=0,
                   help="threads per predictor (0 = the cores divided among the workers)")
    p.add_argument("--max_queue", type=int, default=16, help="requests that may wait; beyond: 503 + Retry-After")
    p.add_argument("--max_batch", type=int, default=8,
                   help="most waiting requests of one image size run as one predictor call (1: no batching)")
    p.add_argument("--timeout_s", type=float, default=30.0, help="longest wait for an answer (then 504)")
    p.add_argument("--max_bytes", type=int, default=ImageLimits.max_bytes, help="largest request body")
    p.add_argument("--max_pixels", type=int, default=ImageLimits.max_pixels, help="largest image (H*W)")
    p.add_argument("--max_side", type=int, default=ImageLimits.max_side, help="longest image side")
    p.add_argument("--min_side", type=int, default=ImageLimits.min_side, help="shortest image side")
    return p


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"--{name} must be > 0, got {value}")


def load(args: argparse.Namespace) -> tuple:
    """The model, its predictor pool and the limits from the parsed arguments (warmed up)."""
    for name in ("workers", "max_bytes", "max_pixels", "max_side", "min_side", "timeout_s", "max_batch",
                 "probe_side", "probe_rounds", "probe_batch"):
        _positive(name, getattr(args, name))
    cfg = DeployConfig(args.config, "onnx" if args.runtime in ("onnx", "openvino") else "paddle")
    fixed = fixed_batch(cfg)
    if fixed is not None and fixed != 1:
        raise ValueError(f"{cfg.path} fixes the batch size at {fixed}, so a lone request cannot run; export "
                         "with a dynamic batch (tools/export.py --input_shape -1 C H W) or N = 1")
    if fixed == 1 and args.max_batch > 1:
        get_logger().info("[SERVE] the export fixes the batch size at 1: --max_batch %d -> 1", args.max_batch)
        args.max_batch = 1
    threads = args.cpu_threads or max(1, (os.cpu_count() or 1) // args.workers)
    choice = pick_runtime(cfg, args.runtime, threads, args.probe_side, args.probe_rounds, args.workers,
                          min(args.probe_batch, args.max_batch))
    runtime = choice.runtime
    if args.runtime == "auto":
        get_logger().info("[SERVE] --runtime auto: %s (%s)", runtime, choice.reason)
    predictors = [make_predictor_for(cfg, runtime, threads) for _ in range(args.workers)]
    limits = ImageLimits(args.max_bytes, args.max_pixels, args.max_side, args.min_side)
    # Warm-up: the first run of a predictor sets up its kernels; it also tells the class count of a
    # probability output when an older deploy.yaml lacks num_classes. Then one call at the largest
    # batch: onnxruntime's memory arena grows to what the biggest call needs at once, instead of
    # step by step as larger batches first arrive under load (benchmarks/serve_memory.py: a lower
    # resident level in some runs, the same in others, never a throughput cost).
    side = max(64, limits.min_side)
    probe = np.zeros((side, side, cfg.transforms.img_channels), np.float32)
    shapes = set()
    for pr in predictors:
        data = pr.preprocess(probe.copy())
        shapes.add(pr.run(data["img"][None]).shape)
        if args.max_batch > 1:
            pr.run(np.repeat(data["img"][None], args.max_batch, axis=0))
    num_classes = cfg.dic.get("num_classes")
    if num_classes is None and cfg.output_op != "argmax":
        num_classes = next(iter(shapes))[1]
    model = Model(cfg, runtime, num_classes, choice)
    pool = PredictorPool(predictors, args.max_queue, args.timeout_s, args.max_batch)
    return model, pool, limits


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    limit_malloc_arenas(2)  # before the predictors' and the pool's threads allocate
    model, pool, limits = load(args)
    log = get_logger()
    log.info("[SERVE] %s on %s (%d worker(s) x %d thread(s), queue %d, batch <= %d); http://%s:%d/",
             model.cfg.path, model.runtime, pool.workers,
             args.cpu_threads or max(1, (os.cpu_count() or 1) // args.workers), pool.max_queue, pool.max_batch,
             args.host, args.port)
    try:
        uvicorn.run(create_app(model, pool, limits), host=args.host, port=args.port, access_log=False,
                    log_level="warning", timeout_graceful_shutdown=5)
    finally:
        pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
