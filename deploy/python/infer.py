"""Paddle Inference deployment of an exported model, driven by its deploy.yaml.

    python deploy/python/infer.py --config output/inference_model/deploy.yaml \
        --image_path img_or_dir_or_list --save_dir output/deploy_result [--benchmark]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from paddleseg_ext.cvlibs import ComponentBuilder  # noqa: E402
from paddleseg_ext.transforms import Compose  # noqa: E402


class DeployConfig:
    """Reads deploy.yaml: model files, transforms, output op, custom ops."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"deploy.yaml not found: {path}")
        with open(path) as f:
            self.dic = (yaml.safe_load(f) or {}).get("Deploy")
        if not self.dic:
            raise ValueError(f"{path} has no 'Deploy' section; was it written by tools/export.py?")
        self.dir = os.path.dirname(os.path.abspath(path))
        self.model_file = os.path.join(self.dir, self.dic["model"])
        self.params_file = os.path.join(self.dir, self.dic["params"])
        for p in (self.model_file, self.params_file):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{path} names {p}, which does not exist")
        builder = ComponentBuilder(lambda _: path)
        transforms = builder.build_value(self.dic.get("transforms", []), "Deploy.transforms")
        channels = (self.dic.get("input_shape") or [None, 3])[1] or 3
        self.transforms = Compose(transforms, img_channels=channels)
        self.output_op = self.dic.get("output_op", "argmax")
        self.custom_ops: List[str] = list(self.dic.get("custom_ops") or [])


def load_custom_ops(names: List[str]) -> None:
    """Register the compiled custom ops the model needs in this process."""
    for name in names:
        if name == "psa_mask":
            from paddleseg_ext.ops import load_op_library

            load_op_library()
        else:
            raise ValueError(f"deploy.yaml needs custom op '{name}', which this toolkit does not provide")


class Predictor:
    """A Paddle Inference predictor for one exported model.

    Args:
        cfg: the deploy config.
        device: ``cpu`` or ``gpu``.
        cpu_threads: math-library threads on CPU.
        enable_mkldnn: use oneDNN kernels on CPU.
        use_trt, precision: TensorRT on GPU (``fp32 | fp16 | int8``).
    """

    def __init__(self, cfg: DeployConfig, device: str = "cpu", cpu_threads: int = 0,
                 enable_mkldnn: bool = False, use_trt: bool = False, precision: str = "fp32") -> None:
        from paddle import inference

        load_custom_ops(cfg.custom_ops)
        self.cfg = cfg
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
            else:
                pcfg.disable_mkldnn()
        pcfg.disable_glog_info()
        pcfg.switch_ir_optim(True)
        self.predictor = inference.create_predictor(pcfg)
        self.times: Dict[str, float] = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}

    def preprocess(self, path: str) -> Dict[str, Any]:
        return self.cfg.transforms({"img": path, "trans_info": [], "gt_fields": []})

    def run(self, batch: np.ndarray) -> np.ndarray:
        name = self.predictor.get_input_names()[0]
        handle = self.predictor.get_input_handle(name)
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch, dtype="float32"))
        self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()

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

    def predict(self, paths: List[str], batch_size: int = 1) -> List[np.ndarray]:
        results = []
        for i in range(0, len(paths), batch_size):
            t0 = time.perf_counter()
            datas = [self.preprocess(p) for p in paths[i:i + batch_size]]
            shapes = {d["img"].shape for d in datas}
            if len(shapes) > 1:
                raise ValueError(f"--batch_size {batch_size} needs images of one size after the transforms, "
                                 f"got {sorted(shapes)}; use --batch_size 1")
            batch = np.stack([d["img"] for d in datas])
            t1 = time.perf_counter()
            out = self.run(batch)
            t2 = time.perf_counter()
            results += [self.postprocess(o, d["trans_info"]) for o, d in zip(out, datas)]
            t3 = time.perf_counter()
            self.times["preprocess"] += t1 - t0
            self.times["inference"] += t2 - t1
            self.times["postprocess"] += t3 - t2
        return results


def main(argv=None):
    p = argparse.ArgumentParser(description="Paddle Inference for an exported segmentation model")
    p.add_argument("--config", required=True, help="deploy.yaml written by tools/export.py")
    p.add_argument("--image_path", required=True, help="image file, folder or list file")
    p.add_argument("--save_dir", default="output/deploy_result")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--cpu_threads", type=int, default=0)
    p.add_argument("--enable_mkldnn", action="store_true")
    p.add_argument("--use_trt", action="store_true")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--benchmark", action="store_true", help="print per-stage ms and images/s")
    p.add_argument("--custom_color", nargs="+", type=int)
    args = p.parse_args(argv)

    from paddleseg_ext.core.predict import _rel_name, get_image_list
    from paddleseg_ext.utils.visualize import get_color_map_list, get_pseudo_color_map

    cfg = DeployConfig(args.config)
    predictor = Predictor(cfg, args.device, args.cpu_threads, args.enable_mkldnn, args.use_trt, args.precision)
    images, base = get_image_list(args.image_path)
    if args.benchmark:  # warm-up, not timed
        predictor.predict(images[:1])
        predictor.times = dict.fromkeys(predictor.times, 0.0)
    preds = predictor.predict(images, args.batch_size)
    cmap = get_color_map_list(256, args.custom_color)
    for path, pred in zip(images, preds):
        out = os.path.join(args.save_dir, _rel_name(path, base) + ".png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        get_pseudo_color_map(pred, cmap).save(out)
    print(f"[DEPLOY] {len(images)} image(s) -> {args.save_dir}")
    if args.benchmark:
        n = len(images)
        t = predictor.times
        print("[DEPLOY] per image: preprocess %.2f ms, inference %.2f ms, postprocess %.2f ms; %.2f images/s"
              % (1e3 * t["preprocess"] / n, 1e3 * t["inference"] / n, 1e3 * t["postprocess"] / n,
                 n / max(sum(t.values()), 1e-9)))
    return preds


if __name__ == "__main__":
    main()
