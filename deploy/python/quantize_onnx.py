"""INT8 post-training static quantisation of an ONNX export, calibrated on training data.

    python deploy/python/quantize_onnx.py --config output/onnx_model/deploy.yaml \
        --train_config configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml \
        --save_dir output/onnx_int8 [--calib 64] [--seed 0]

Writes a copy of the export folder whose deploy.yaml names ``model_int8.onnx``
(and records how it was made under ``onnx.int8``), so infer_onnx.py and
serve.py run it unchanged. onnxruntime's static quantiser ("Quantize ONNX
models" in its documentation): QDQ format, int8 weights per output channel,
uint8 activations (U8S8, fast on x86-64 CPUs with VNNI; several users report
INT8 slower than float32 without it), MinMax ranges, Conv and MatMul only.
Calibration images are ``--calib`` random windows of the training image of
``--train_config`` (its ``train_dataset``: a ``RandomWindows`` scene with
``image_path`` and ``crop_size``), each through the export's own val
transforms. benchmarks/int8.py measures speed and mIoU against float32
(docs/benchmarks.md): use the INT8 model only where that holds for yours.
Needs ``onnxruntime`` and ``ml_dtypes`` (its quantiser imports it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from infer import DeployConfig  # noqa: E402
from infer_onnx import OnnxPredictor  # noqa: E402
from paddleseg_ext.cvlibs.errors import MissingDependencyError  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.utils.logger import get_logger  # noqa: E402

PER_CHANNEL_OPSET = 13


def training_windows(train_config: str, n: int, seed: int = 0) -> List[np.ndarray]:
    """``n`` random ``crop_size`` windows (HWC float32) of the training image of ``train_config``.

    Raises:
        ValueError: the config's train_dataset is not a scene with ``image_path`` and ``crop_size``.
    """
    from paddleseg_ext.cvlibs import Config
    from paddleseg_ext.transforms.loading import read_image

    train = Config(train_config).dic.get("train_dataset") or {}
    if "image_path" not in train or "crop_size" not in train:
        raise ValueError(f"{train_config}: train_dataset has no image_path / crop_size (a RandomWindows scene); "
                         "calibration reads random windows of that image")
    image = os.path.join(train.get("dataset_root", ""), train["image_path"])
    img = read_image(image, img_channels=int(train.get("img_channels", 3)))
    size = int(np.asarray(train["crop_size"]).ravel()[0])
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"{image} is {w}x{h}, smaller than crop_size {size}")
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        y, x = rng.randint(0, h - size + 1), rng.randint(0, w - size + 1)
        out.append(img[y:y + size, x:x + size].copy())
    return out


def quantize_export(deploy_yaml: str, calib: List[np.ndarray], save_dir: str) -> str:
    """Copy the export to ``save_dir`` with an INT8 ``model_int8.onnx``; returns its deploy.yaml."""
    try:
        from onnxruntime import quantization as q
    except ImportError as e:
        raise MissingDependencyError(f"INT8 quantisation needs onnxruntime's quantiser ({e}): "
                                     "pip install onnxruntime ml_dtypes") from e
    # The calibration sessions would print one warning per initializer paddle2onnx left unused.
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    cfg = DeployConfig(deploy_yaml, "onnx")
    if not calib:
        raise ValueError("--calib must be >= 1")
    out = Path(save_dir)
    if out.resolve() == Path(cfg.dir).resolve():
        raise ValueError(f"--save_dir {save_dir} is the export folder itself; give a new folder")
    shutil.copytree(cfg.dir, out, dirs_exist_ok=True)
    pre = OnnxPredictor(cfg, cpu_threads=1)
    batches = [pre.preprocess(c)["img"][None] for c in calib]
    name = pre.input_name

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            b = next(self.batches, None)
            return None if b is None else {name: b}

    import onnx

    # Per-channel weights dequantise with DequantizeLinear's ``axis``, which exists from opset 13 on; the
    # quantiser does not raise the opset itself (tools/export.py's default minimum is 11).
    prepped = str(out / "model_prep.onnx")
    model = onnx.load(cfg.onnx_file)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < PER_CHANNEL_OPSET:
        model = onnx.version_converter.convert_version(model, PER_CHANNEL_OPSET)
    onnx.save(model, prepped)
    q.quant_pre_process(prepped, prepped, skip_symbolic_shape=True)
    q.quantize_static(prepped, str(out / "model_int8.onnx"), Reader(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      op_types_to_quantize=["Conv", "MatMul"], calibrate_method=q.CalibrationMethod.MinMax)
    os.remove(prepped)
    meta = yaml.safe_load((out / "deploy.yaml").read_text())
    onnx = meta["Deploy"]["onnx"]
    onnx["int8"] = {"source": onnx["model"], "calibration_images": len(calib), "format": "QDQ U8S8 per-channel",
                    "method": "MinMax", "ops": ["Conv", "MatMul"], "opset": max(opset, PER_CHANNEL_OPSET)}
    onnx["model"] = "model_int8.onnx"
    (out / "deploy.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return str(out / "deploy.yaml")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="INT8 static quantisation of an ONNX export (onnxruntime)")
    p.add_argument("--config", required=True, help="deploy.yaml of a tools/export.py --format onnx export")
    p.add_argument("--train_config", required=True, help="the training config (its training image calibrates)")
    p.add_argument("--save_dir", required=True, help="new export folder for the INT8 model")
    p.add_argument("--calib", type=int, default=64, help="random training windows for calibration")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.calib < 1:
        p.error("--calib must be >= 1")
    out = quantize_export(args.config, training_windows(args.train_config, args.calib, args.seed), args.save_dir)
    get_logger().info("[QUANT] INT8 export (%d calibration windows) -> %s", args.calib, out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
