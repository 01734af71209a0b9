"""INT8 post-training static quantisation of an ONNX export: speed and mIoU against float32.

    python benchmarks/int8.py [--config configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml]
        [--model_path output/quickstart/best_model/model.pdparams] [--calib 64] [--repeats 20]

The model is exported to ONNX (``tools/export.py --format onnx``), then
quantised by deploy/python/quantize_onnx.py (onnxruntime's static quantiser:
QDQ, int8 weights per channel, uint8 activations, MinMax; Conv and MatMul)
on ``--calib`` random windows of the *training* image, each through the
export's own val transforms.
Both models are scored on the validation set (mIoU with the dataset's
ignore index, at label resolution) and timed on its images in interleaved
rounds, at 1 and 2 threads, with deploy/python/infer_onnx.py's predictor.

onnxruntime docs: "Quantize ONNX models" (static quantisation, QDQ, U8S8 on
x86-64 with VNNI). INT8 is offered only where this prints it faster with an
mIoU drop of at most 0.01.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy" / "python"))

QUICKSTART_CFG = "configs/landcover6/pointrend_resnet18_landcover6band_64x64_1500.yml"


def export(config: str, weights: Optional[str], out: Path) -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_export", ROOT / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = ["--config", config, "--save_dir", str(out), "--format", "onnx", "--output_op", "none"]
    tool.main(argv + (["--model_path", weights] if weights else []))
    return str(out / "deploy.yaml")


def val_set(cfg: Any) -> List[Dict[str, str]]:
    val = cfg.dic["val_dataset"]
    root = ROOT / val["dataset_root"]
    lines = (root / val.get("val_path", "val.txt")).read_text().split("\n")
    return [{"img": str(root / a), "label": str(root / b)} for a, b in (ln.split()[:2] for ln in lines if ln.strip())]


def miou(predictor: Any, samples: List[Dict[str, str]], num_classes: int, ignore: int) -> float:
    from paddleseg_ext.transforms.loading import read_label
    from paddleseg_ext.utils.metrics import ConfusionMatrix

    cm = ConfusionMatrix(num_classes, ignore)
    for s in samples:
        (_, pred), = predictor.predict([s["img"]])
        cm.update(pred, read_label(s["label"]))
    return float(cm.compute()["mIoU"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=QUICKSTART_CFG)
    p.add_argument("--model_path", default="output/quickstart/best_model/model.pdparams")
    p.add_argument("--calib", type=int, default=64, help="training windows for calibration")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds over the val images")
    args = p.parse_args(argv)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    from paddleseg_ext.cvlibs import Config, SegBuilder

    from infer import DeployConfig
    from infer_onnx import OnnxPredictor
    from quantize_onnx import quantize_export, training_windows

    cfg = Config(str(ROOT / args.config))
    builder = SegBuilder(cfg)
    weights = str(ROOT / args.model_path) if args.model_path and (ROOT / args.model_path).is_file() else None
    samples = val_set(cfg)
    with tempfile.TemporaryDirectory(prefix="int8_") as tmp:
        fp32 = export(str(ROOT / args.config), weights, Path(tmp) / "fp32")
        int8 = quantize_export(fp32, training_windows(str(ROOT / args.config), args.calib), str(Path(tmp) / "int8"))
        rows = []
        for threads in (1, 2):
            preds = {"fp32": OnnxPredictor(DeployConfig(fp32, "onnx"), cpu_threads=threads),
                     "int8": OnnxPredictor(DeployConfig(int8, "onnx"), cpu_threads=threads)}
            batch = [preds["fp32"].preprocess(s["img"])["img"][None] for s in samples]
            times: Dict[str, List[float]] = {k: [] for k in preds}
            for k in preds:
                preds[k].run(batch[0])
            for _ in range(args.repeats):
                for k, pr in preds.items():
                    t0 = time.perf_counter()
                    for b in batch:
                        pr.run(b)
                    times[k].append((time.perf_counter() - t0) / len(batch))
            scores = {k: miou(pr, samples, builder.num_classes, builder.ignore_index) for k, pr in preds.items()}
            ref = preds["fp32"].run(batch[0])
            got = preds["int8"].run(batch[0])
            agree = float((ref.argmax(1) == got.argmax(1)).mean())
            for k in preds:
                ms = 1e3 * statistics.median(times[k])
                rows.append((threads, k, ms, scores[k]))
            rows.append((threads, "int8 / fp32", statistics.median(times["fp32"]) / statistics.median(times["int8"]),
                         scores["int8"] - scores["fp32"], agree))
    print(f"| threads | model | ms per image | mIoU (val, {len(samples)} tiles) |")
    print("|---|---|---|---|")
    for r in rows:
        if r[1] == "int8 / fp32":
            print(f"| {r[0]} | int8 vs fp32 | {r[2]:.2f}x faster | {r[3]:+.4f} (argmax agreement on tile 0: "
                  f"{100 * r[4]:.1f} %) |")
        else:
            print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.4f} |")
    print(f"\n- {args.config}, weights {'from ' + args.model_path if weights else 'random (no trained model)'}; "
          f"calibration: {args.calib} random training windows, MinMax, QDQ, per-channel int8 weights, uint8 "
          f"activations, Conv and MatMul; timing: median over {args.repeats} interleaved rounds of every val tile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
