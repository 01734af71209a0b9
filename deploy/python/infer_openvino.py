"""OpenVINO runtime deployment of a model exported with ``tools/export.py --format onnx``.

    python deploy/python/infer_openvino.py --config output/onnx_model/deploy.yaml \
        --image_path img_or_dir_or_list --save_dir output/openvino_result [--benchmark]

Same command line, deploy.yaml, pre/post-processing and outputs as
deploy/python/infer_onnx.py; OpenVINO's CPU plugin reads the exported
``model.onnx`` directly (no conversion step). Needs ``pip install openvino``.

Precision: OpenVINO's CPU plugin runs float32 models in bfloat16 by default on
CPUs with native bf16 (``INFERENCE_PRECISION_HINT``; AMD Zen 4, Intel Sapphire
Rapids), which changes the logits by ~1e-2 relative. ``fp32`` (the default
here) pins float32 so the answers equal the other runtimes'; ``bf16`` keeps
OpenVINO's choice.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from infer import BasePredictor, DeployConfig, Predictions, exit_status, run_deploy  # noqa: E402
from paddleseg_ext.cvlibs.errors import MissingDependencyError  # noqa: E402
from paddleseg_ext.utils.cli import run_cli  # noqa: E402

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def import_openvino() -> Any:
    """``openvino``, or :class:`MissingDependencyError` saying how to install it."""
    try:
        import openvino
    except ImportError as e:
        raise MissingDependencyError(f"OpenVINO deployment needs the package 'openvino' ({e}): "
                                     "pip install openvino") from e
    return openvino


def compile_config(cpu_threads: int = 0, precision: str = "fp32") -> dict:
    """The CPU plugin's settings for a predictor of ``cpu_threads`` threads (0 = all cores).

    OpenVINO pins its inference threads to cores, and two compiled models in one process pin theirs
    to the same cores: two one-thread predictors of the quick-start model (serve.py's two workers on
    two cores) ran 1.12x one predictor's images/s pinned and 1.87x unpinned. A predictor that does
    not own every core therefore leaves the placement to the OS.
    """
    threads = int(cpu_threads or os.cpu_count() or 1)
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads < (os.cpu_count() or 1):
        config["ENABLE_CPU_PINNING"] = False
    return config


class OpenVinoPredictor(BasePredictor):
    """An OpenVINO CPU infer request for one exported ONNX model.

    Args:
        cfg: the deploy config (must list an ONNX model).
        device: ``cpu`` only.
        cpu_threads: inference threads (0 = all cores).
        precision: ``fp32`` (exact) or ``bf16`` (OpenVINO's default on bf16 CPUs).
    """

    def __init__(self, cfg: DeployConfig, device: str = "cpu", cpu_threads: int = 0,
                 precision: str = "fp32") -> None:
        super().__init__(cfg)
        ov = import_openvino()
        if device != "cpu":
            raise ValueError(f"infer_openvino.py runs on the CPU; --device {device} is not supported")
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(cfg.onnx_file), "CPU",
                                           compile_config(cpu_threads, precision))
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(batch, dtype="float32")})
        return self.request.get_output_tensor(0).data.copy()


def _openvino_predictor(cfg: DeployConfig, args: Any) -> OpenVinoPredictor:
    if args.precision != "fp32":
        raise ValueError(f"infer_openvino.py runs the float32 ONNX model; --precision {args.precision} is not "
                         "supported (OpenVinoPredictor(precision='bf16') keeps OpenVINO's bf16 default)")
    return OpenVinoPredictor(cfg, args.device, args.cpu_threads)


def main(argv: Optional[Sequence[str]] = None) -> Predictions:
    import_openvino()  # before reading anything: the clearest error first
    return run_deploy(argv, "onnx", _openvino_predictor, "OpenVINO inference for a model exported to ONNX")


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: exit_status(main(argv))))
