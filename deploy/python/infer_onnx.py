"""onnxruntime deployment of a model exported with ``tools/export.py --format onnx``.

    python deploy/python/infer_onnx.py --config output/onnx_model/deploy.yaml \
        --image_path img_or_dir_or_list --save_dir output/onnx_result [--benchmark]

Same command line, deploy.yaml, pre/post-processing and outputs as
deploy/python/infer.py; the model runs in onnxruntime (``model.onnx`` from
deploy.yaml). Needs the optional dependency: ``pip install -e .[onnx]``.

Devices: ``--device cpu`` (CPUExecutionProvider; ``--enable_mkldnn`` uses
DnnlExecutionProvider when this onnxruntime build has it), ``--device gpu``
(CUDAExecutionProvider, ``--use_trt`` TensorrtExecutionProvider; needs
onnxruntime-gpu).
"""

from __future__ import annotations

import os
import sys
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from infer import BasePredictor, DeployConfig, Predictions, exit_status, run_deploy  # noqa: E402
from paddleseg_ext.core.export import require  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402
from paddleseg_ext.utils.logger import get_logger  # noqa: E402


def import_onnxruntime() -> Any:
    """``onnxruntime``, or :class:`MissingDependencyError` saying how to install it."""
    return require("onnxruntime", "ONNX deployment (deploy/python/infer_onnx.py)")


class OnnxPredictor(BasePredictor):
    """An onnxruntime session for one exported model.

    Args:
        cfg: the deploy config (must list an ONNX model).
        device: ``cpu`` or ``gpu``.
        cpu_threads: intra-op threads (0 = all cores).
        enable_mkldnn: prefer the oneDNN execution provider when available.
        use_trt: TensorRT execution provider (GPU).
        precision: only ``fp32`` (the exported ONNX model is float32).
    """

    def __init__(self, cfg: DeployConfig, device: str = "cpu", cpu_threads: int = 0,
                 enable_mkldnn: bool = False, use_trt: bool = False, precision: str = "fp32") -> None:
        super().__init__(cfg)
        ort = import_onnxruntime()
        log = get_logger()
        if precision != "fp32":
            raise ValueError(f"infer_onnx.py runs the float32 ONNX model; --precision {precision} is not "
                             "supported (use deploy/python/infer.py with TensorRT for fp16/int8)")
        available = ort.get_available_providers()
        providers: List[str] = []
        if device == "gpu":
            if use_trt:
                providers.append("TensorrtExecutionProvider")
            providers.append("CUDAExecutionProvider")
            missing = [p for p in providers if p not in available]
            if missing:
                raise RuntimeError(f"--device gpu needs onnxruntime-gpu: {', '.join(missing)} not available "
                                   f"(this onnxruntime has {', '.join(available)})")
        elif enable_mkldnn:
            if "DnnlExecutionProvider" in available:
                providers.append("DnnlExecutionProvider")
            else:
                log.warning("[DEPLOY-ONNX] --enable_mkldnn: this onnxruntime has no DnnlExecutionProvider "
                            "(available: %s); using the CPU provider", ", ".join(available))
        providers.append("CPUExecutionProvider")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = int(cpu_threads or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(cfg.onnx_file, opts, providers=providers)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype="float32")})[0]


def _onnx_predictor(cfg: DeployConfig, args: Any) -> OnnxPredictor:
    return OnnxPredictor(cfg, args.device, args.cpu_threads, args.enable_mkldnn, args.use_trt, args.precision)


def main(argv: Optional[Sequence[str]] = None) -> Predictions:
    import_onnxruntime()  # before reading anything: the clearest error first
    return run_deploy(argv, "onnx", _onnx_predictor, "onnxruntime inference for a model exported to ONNX")


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: exit_status(main(argv))))
