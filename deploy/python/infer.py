"""Paddle Inference deployment of an exported model, driven by its deploy.yaml.

    python deploy/python/infer.py --config output/inference_model/deploy.yaml \
        --image_path img_or_dir_or_list --save_dir output/deploy_result [--benchmark]

Reads the model files, val transforms, output op and needed custom ops from
deploy.yaml (written by tools/export.py), registers the custom ops (PSANet
exported with the compiled ``psa_mask`` op), runs every image and writes
colour predictions (palette PNG) to ``--save_dir``. ``--benchmark`` prints
per-image preprocess / inference / postprocess ms and images/s.
deploy/python/infer_onnx.py is the same with onnxruntime.

``--scene`` predicts each image as a scene of any size (a GeoTIFF): window by
window (``--crop_size``, ``--stride``, ``--batch_size`` windows a batch),
written as ``<save_dir>/<name>.tif`` with the input's CRS, geotransform and
no-data; sharded over processes under ``python -m paddle.distributed.launch``
(docs/multiband.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from paddleseg_ext.cvlibs.errors import DeploymentError  # noqa: E402
from paddleseg_ext.cvlibs import ComponentBuilder  # noqa: E402
from paddleseg_ext.transforms import Compose  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.utils.infer_options import InferOptions  # noqa: E402
from paddleseg_ext.utils.logger import get_logger  # noqa: E402
from paddleseg_ext.scene import SceneReport, add_scene_args  # noqa: E402
from paddleseg_ext.utils.visualize_outputs import add_picture_args  # noqa: E402

# What the exported model returns, by deploy.yaml's output_op, in scene terms.
SCENE_OUTPUTS = {"argmax": "classes", "softmax": "probs", "none": "logits"}


class CustomOpError(DeploymentError):
    """A custom op the model needs cannot be registered (a run-time fault: exit status 1)."""


class DeployConfig:
    """Reads deploy.yaml: model files, transforms, output op, custom ops.

    Args:
        path: deploy.yaml, or the export folder holding it.
        backend: ``paddle`` checks the Paddle model files, ``onnx`` the ONNX file.

    Attributes:
        infer_options: the window (``crop_size``, ``stride``) the export recorded from its
            config's ``test_config``, used by ``--scene``.

    Raises:
        FileNotFoundError: deploy.yaml or a file it names is missing (the message names the path).
        ValueError: deploy.yaml is not an export's deploy.yaml, has no ONNX model for ``onnx``,
            or a bad ``crop_size`` / ``stride``.
    """

    def __init__(self, path: str, backend: str = "paddle") -> None:
        if os.path.isdir(path):
            path = os.path.join(path, "deploy.yaml")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"deploy.yaml not found: {path} (write it with tools/export.py "
                                    "--save_dir DIR, then pass --config DIR/deploy.yaml)")
        self.path = path
        with open(path) as f:
            try:
                dic = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ValueError(f"{path} is not valid YAML: {e}") from None
        self.dic = dic.get("Deploy") if isinstance(dic, dict) else None
        if not isinstance(self.dic, dict) or "model" not in self.dic:
            raise ValueError(f"{path} has no 'Deploy' section with a model; was it written by tools/export.py?")
        self.dir = os.path.dirname(os.path.abspath(path))
        self.model_file = os.path.join(self.dir, self.dic["model"])
        self.params_file = os.path.join(self.dir, self.dic.get("params", "model.pdiparams"))
        onnx = self.dic.get("onnx") or {}
        self.onnx_file: Optional[str] = os.path.join(self.dir, onnx["model"]) if onnx.get("model") else None
        if backend == "onnx":
            if self.onnx_file is None:
                raise ValueError(f"{path} lists no ONNX model; export with tools/export.py --format onnx")
            needed = [self.onnx_file]
        else:
            needed = [self.model_file, self.params_file]
        for p in needed:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{path} names {p}, which does not exist")
        builder = ComponentBuilder(lambda _: path)
        transforms = builder.build_value(self.dic.get("transforms", []), "Deploy.transforms")
        # Band count: recorded by export (older files: the input shape's C).
        channels = self.dic.get("img_channels", (self.dic.get("input_shape") or [None, 3])[1])
        channels = channels if isinstance(channels, int) and channels > 0 else 3
        self.transforms = Compose(transforms, img_channels=channels)
        self.output_op = self.dic.get("output_op", "argmax")
        self.custom_ops: List[str] = list(self.dic.get("custom_ops") or [])
        self.custom_op_libs: Dict[str, str] = dict(self.dic.get("custom_op_libs") or {})
        self.paddle_version: Optional[str] = self.dic.get("paddle_version")
        self.infer_options = InferOptions.from_deploy(self.dic, path)


def load_custom_ops(names: Sequence[str], libs: Optional[Dict[str, str]] = None, base_dir: str = ".",
                    paddle_version: Optional[str] = None) -> Dict[str, str]:
    """Register the compiled custom ops the model needs in this process.

    For ``psa_mask``, in order: the op already loaded in this process or the
    per-user cached build (``paddleseg_ext.ops``); the library shipped in the
    export folder (``custom_op_libs`` in deploy.yaml, only if built for this
    Paddle version); a fresh build from source. A custom op can be
    registered only once per process, so the first that works wins.

    Returns:
        ``{op name: where it came from}``.

    Raises:
        CustomOpError: the op can be neither loaded nor built.
        ValueError: an op this toolkit does not provide.
    """
    import paddle

    done: Dict[str, str] = {}
    libs = libs or {}
    for name in names:
        from paddleseg_ext.ops import op_cache_dir
        from paddleseg_ext.ops.custom_op_build import registered_op

        op = registered_op(name)
        if op is None:
            raise ValueError(f"deploy.yaml needs custom op '{name}', which this toolkit does not provide")
        load_op_library = op.load_library
        errors = []
        try:
            done[name] = load_op_library(build=False)[1]
            continue
        except RuntimeError:
            errors.append(f"no build for this Paddle and these sources in {op_cache_dir()}")
        shipped = os.path.join(base_dir, libs[name]) if name in libs else None
        if shipped and os.path.isfile(shipped) and paddle_version == paddle.__version__:
            from paddle.utils.cpp_extension.extension_utils import load_op_meta_info_and_register_op

            load_op_meta_info_and_register_op(shipped)
            done[name] = shipped
            continue
        if shipped:
            errors.append(f"shipped library {shipped} is for Paddle {paddle_version}, this is "
                          f"{paddle.__version__}" if os.path.isfile(shipped) else f"{shipped} is missing")
        try:
            done[name] = load_op_library(build=True)[1]
        except RuntimeError as e:
            errors.append(str(e))
            raise CustomOpError(f"the model needs the compiled custom op '{name}', which could not be "
                               f"registered: {'; '.join(errors)}. Build it with `python -m "
                               "paddleseg_ext.ops.build`, or re-export with tools/export.py --psa_impl "
                               "paddle for a model that needs nothing but Paddle.") from e
    return done


class BasePredictor:
    """Pre/post-processing and batching shared by the Paddle and ONNX runners.

    Subclasses implement :meth:`run` (``[N, C, H, W]`` float32 -> raw output).
    """

    def __init__(self, cfg: DeployConfig) -> None:
        self.cfg = cfg
        self.times: Dict[str, float] = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.images_done = 0
        self.skipped: List[Tuple[str, str]] = []
        self._warned_sizes = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def preprocess(self, path: str) -> Dict[str, Any]:
        return self.cfg.transforms({"img": path, "trans_info": [], "gt_fields": []})

    def postprocess(self, out: np.ndarray, trans_info: List[Any]) -> np.ndarray:
        """Class map ``[H0, W0]`` at the original resolution."""
        import cv2

        if self.cfg.output_op != "argmax":
            out = out.argmax(axis=0)
        pred = out.astype(np.int32)
        for op, (h, w) in reversed(trans_info):
            if op == "resize":
                pred = cv2.resize(pred.astype(np.float32), (int(w), int(h)),
                                  interpolation=cv2.INTER_NEAREST).astype(np.int32)
            elif op == "padding":
                pred = pred[:int(h), :int(w)]
        return pred

    def reset_times(self) -> None:
        self.times = dict.fromkeys(self.times, 0.0)
        self.images_done = 0

    def warmup(self, paths: List[str], batch_size: int = 1) -> None:
        """Run one batch untimed (first-run set-up is not part of a benchmark)."""
        self.predict(paths[:batch_size], batch_size, quiet=True)
        self.reset_times()
        self.skipped = []

    def _run_group(self, datas: List[Dict[str, Any]]) -> List[np.ndarray]:
        t1 = time.perf_counter()
        out = self.run(np.stack([d["img"] for d in datas]))
        t2 = time.perf_counter()
        preds = [self.postprocess(o, d["trans_info"]) for o, d in zip(out, datas)]
        self.times["inference"] += t2 - t1
        self.times["postprocess"] += time.perf_counter() - t2
        return preds

    def predict(self, paths: List[str], batch_size: int = 1, quiet: bool = False) -> List[Tuple[str, np.ndarray]]:
        """Predict ``paths`` in batches; unreadable images are skipped with a warning.

        Args:
            quiet: no warnings (warm-up runs).

        Returns:
            ``(path, class map)`` for every image that was read.
        """
        if batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
        log = get_logger()
        results: List[Tuple[str, np.ndarray]] = []
        for i in range(0, len(paths), batch_size):
            t0 = time.perf_counter()
            datas, names = [], []
            for p in paths[i:i + batch_size]:
                try:
                    datas.append(self.preprocess(p))
                    names.append(p)
                except (ValueError, OSError) as e:
                    self.skipped.append((p, str(e)))
                    if not quiet:
                        log.warning("[DEPLOY] skipping %s: %s", p, e)
            self.times["preprocess"] += time.perf_counter() - t0
            if not datas:
                continue
            shapes = {d["img"].shape for d in datas}
            if len(shapes) == 1:
                preds = self._run_group(datas)
            else:  # a batch needs one size: run this one image by image
                if not self._warned_sizes and not quiet:
                    self._warned_sizes = True
                    log.warning("[DEPLOY] --batch_size %d: images of different sizes after the transforms "
                                "(%s); running those batches one image at a time", batch_size,
                                ", ".join("x".join(map(str, s[1:])) for s in sorted(shapes)))
                preds = [p for d in datas for p in self._run_group([d])]
            results += list(zip(names, preds))
            self.images_done += len(datas)
        return results


class Predictor(BasePredictor):
    """A Paddle Inference predictor for one exported model.

    Args:
        cfg: the deploy config.
        device: ``cpu`` or ``gpu``.
        cpu_threads: math-library threads on CPU (0 = all cores).
        enable_mkldnn: use oneDNN kernels on CPU.
        use_trt, precision: TensorRT on GPU (``fp32 | fp16 | int8``).
    """

    def __init__(self, cfg: DeployConfig, device: str = "cpu", cpu_threads: int = 0,
                 enable_mkldnn: bool = False, use_trt: bool = False, precision: str = "fp32") -> None:
        super().__init__(cfg)
        from paddle import inference

        self.custom_op_sources = load_custom_ops(cfg.custom_ops, cfg.custom_op_libs, cfg.dir, cfg.paddle_version)
        pcfg = inference.Config(cfg.model_file, cfg.params_file)
        if device == "gpu":
            pcfg.enable_use_gpu(256, 0)
            if use_trt:
                prec = {"fp32": inference.PrecisionType.Float32, "fp16": inference.PrecisionType.Half,
                        "int8": inference.PrecisionType.Int8}[precision]
                pcfg.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1, min_subgraph_size=3,
                                            precision_mode=prec, use_static=False, use_calib_mode=precision == "int8")
        else:
            pcfg.disable_gpu()
            pcfg.set_cpu_math_library_num_threads(cpu_threads or os.cpu_count() or 1)
            if enable_mkldnn:
                pcfg.enable_mkldnn()
                # Paddle 3.3's oneDNN placement pass moves bilinear_interp to a oneDNN kernel whose
                # attributes the executor cannot convert ("ConvertPirAttribute2RuntimeAttribute not
                # support ArrayAttribute<DoubleAttribute>", Paddle issue #79749); every model here
                # resizes bilinearly. Without that pass the oneDNN conv/BN/activation fusions remain.
                pcfg.delete_pass("onednn_placement_pass")
            else:  # explicitly: Paddle 3.3 uses oneDNN on CPU unless told not to (same failure)
                pcfg.disable_mkldnn()
        # No enable_memory_optim(): with a PIR program Paddle 3.3 then fails in run() with "Not find
        # predictor_id 0 and pass_name memory_optimize_pass" (deploy/README.md, PaddleSeg's tool).
        pcfg.disable_glog_info()
        pcfg.switch_ir_optim(True)
        try:
            self.predictor = inference.create_predictor(pcfg)
        except RuntimeError as e:
            if "kernel output args" in str(e) and not cfg.custom_ops:
                raise RuntimeError(f"{cfg.model_file} seems to call a custom op that deploy.yaml does not "
                                   f"list (custom_ops); re-export it with tools/export.py. Paddle said: {e}") from e
            raise
        self.input_name = self.predictor.get_input_names()[0]
        self.output_name = self.predictor.get_output_names()[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        handle = self.predictor.get_input_handle(self.input_name)
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch, dtype="float32"))
        self.predictor.run()
        return self.predictor.get_output_handle(self.output_name).copy_to_cpu()


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help="deploy.yaml written by tools/export.py (or its folder)")
    p.add_argument("--image_path", required=True, help="image file, folder or list file")
    p.add_argument("--save_dir", default="output/deploy_result")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--cpu_threads", type=int, default=0, help="CPU threads (0 = all cores)")
    p.add_argument("--enable_mkldnn", type=_bool_arg, nargs="?", const=True, default=False,
                   help="oneDNN on CPU (a bare flag or True/False)")
    p.add_argument("--use_trt", type=_bool_arg, nargs="?", const=True, default=False,
                   help="TensorRT on GPU (a bare flag or True/False)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--benchmark", type=_bool_arg, nargs="?", const=True, default=False,
                   help="print per-stage ms and images/s (a bare flag or True/False)")
    p.add_argument("--save_log_path", help="append the benchmark numbers as one JSON line to this file")
    p.add_argument("--custom_color", nargs="+", type=int, help="r g b triples for classes 0, 1, ...")
    add_picture_args(p)
    p.add_argument("--crop_size", nargs=2, type=int,
                   help="with --scene: window (w h); default deploy.yaml's crop_size, else 512 512")
    p.add_argument("--stride", nargs=2, type=int,
                   help="with --scene: window step (w h); default deploy.yaml's stride, else 3/4 window")
    add_scene_args(p, batch_size=False)
    return p


def _bool_arg(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", "null", "none"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


class Predictions(list):
    """``(path, class map)`` pairs of a run, and ``skipped``: ``(path, reason)`` of unreadable images."""

    def __init__(self, items: Sequence[Tuple[str, np.ndarray]] = (), skipped: Sequence[Tuple[str, str]] = ()):
        super().__init__(items)
        self.skipped = list(skipped)


def run_deploy(argv: Optional[Sequence[str]], backend: str, make_predictor: Callable[[DeployConfig, Any], Any],
               description: str) -> Union[Predictions, SceneReport]:
    """The command line shared by infer.py and infer_onnx.py.

    An unreadable image (missing, empty, not decodable) is skipped with one warning line
    naming it; the others still run. The result lists the skipped images.
    """
    from paddleseg_ext.core.predict import get_image_list, output_stem
    from paddleseg_ext.utils.visualize import get_color_map_list
    from paddleseg_ext.utils.visualize_outputs import picture_options, write_color_maps

    args = build_parser(description).parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    cfg = DeployConfig(args.config, backend)
    images, base = get_image_list(args.image_path, missing_ok=True)
    predictor = make_predictor(cfg, args)
    if args.scene:
        return _run_scenes(args, cfg, predictor, images, base, backend)
    if args.benchmark:
        predictor.warmup(images, args.batch_size)
    preds = predictor.predict(images, args.batch_size)
    cmap = get_color_map_list(256, args.custom_color)
    write_color_maps(preds, args.save_dir, lambda path: output_stem(path, base), cmap,
                     img_channels=cfg.transforms.img_channels, **picture_options(args, {"Deploy": cfg.dic}))
    tag = "[DEPLOY]" if backend == "paddle" else "[DEPLOY-ONNX]"
    skipped = f", {len(predictor.skipped)} skipped" if predictor.skipped else ""
    print(f"{tag} {len(preds)} image(s) -> {args.save_dir}{skipped}")
    if args.benchmark and preds:
        n = len(preds)
        t = predictor.times
        stats = {"backend": backend, "images": n, "batch_size": args.batch_size, "device": args.device,
                 "cpu_threads": args.cpu_threads or os.cpu_count(), "enable_mkldnn": bool(args.enable_mkldnn),
                 "preprocess_ms": 1e3 * t["preprocess"] / n, "inference_ms": 1e3 * t["inference"] / n,
                 "postprocess_ms": 1e3 * t["postprocess"] / n, "images_per_s": n / max(sum(t.values()), 1e-9)}
        print(f"{tag} per image: preprocess {stats['preprocess_ms']:.2f} ms, inference "
              f"{stats['inference_ms']:.2f} ms, postprocess {stats['postprocess_ms']:.2f} ms; "
              f"{stats['images_per_s']:.2f} images/s (batch {args.batch_size}, {stats['cpu_threads']} "
              f"threads, mkldnn {stats['enable_mkldnn']})")
        if args.save_log_path:
            os.makedirs(os.path.dirname(os.path.abspath(args.save_log_path)), exist_ok=True)
            with open(args.save_log_path, "a") as f:
                f.write(json.dumps(dict(stats, config=cfg.path)) + "\n")
    return Predictions(preds, predictor.skipped)


def _run_scenes(args: Any, cfg: DeployConfig, predictor: Any, images: List[str], base: Optional[str],
                backend: str) -> SceneReport:
    from paddleseg_ext.scene import predict_scenes, scene_kwargs
    from paddleseg_ext.utils.visualize import get_color_map_list

    if cfg.output_op not in SCENE_OUTPUTS:
        raise ValueError(f"{cfg.path}: output_op {cfg.output_op!r} is not one of {', '.join(SCENE_OUTPUTS)}")
    tag = "[DEPLOY]" if backend == "paddle" else "[DEPLOY-ONNX]"
    options = InferOptions.from_deploy(cfg.dic, cfg.path, args)
    return predict_scenes(images, base, args.save_dir, predictor.run, cfg.transforms, SCENE_OUTPUTS[cfg.output_op],
                          options, cmap=get_color_map_list(256, args.custom_color), tag=tag, **scene_kwargs(args))


def exit_status(preds: Union[Predictions, SceneReport]) -> int:
    """0, or 2 after a run that skipped images or failed scenes (one paragraph on stderr naming them)."""
    if isinstance(preds, SceneReport):
        return preds.exit_status()
    if not preds.skipped:
        return 0
    names = [p for p, _ in preds.skipped]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    print(f"error: {len(names)} image(s) could not be read and were skipped (reasons above): {shown}",
          file=sys.stderr)
    return 2


def _paddle_predictor(cfg: DeployConfig, args: Any) -> Predictor:
    return Predictor(cfg, args.device, args.cpu_threads, args.enable_mkldnn, args.use_trt, args.precision)


def main(argv: Optional[Sequence[str]] = None) -> Predictions:
    return run_deploy(argv, "paddle", _paddle_predictor, "Paddle Inference for an exported segmentation model")


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: exit_status(main(argv))))
