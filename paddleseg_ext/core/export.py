"""Export to a static Paddle Inference model plus ``deploy.yaml``."""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Optional, Sequence

import paddle
import yaml

from ..utils.logger import get_logger

OUTPUT_OPS = ("argmax", "softmax", "none")


class ExportWrapper(paddle.nn.Layer):
    """Eval-mode model + output op: ``[N, C, H, W] -> [N, H, W]`` int32 (argmax) or probabilities."""

    def __init__(self, model: paddle.nn.Layer, output_op: str = "argmax") -> None:
        super().__init__()
        if output_op not in OUTPUT_OPS:
            raise ValueError(f"output_op must be one of {', '.join(OUTPUT_OPS)}, got {output_op!r}")
        self.model, self.output_op = model, output_op

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        logit = self.model(x)[0]
        if self.output_op == "argmax":
            return paddle.argmax(logit, axis=1, dtype="int32")
        if self.output_op == "softmax":
            return paddle.nn.functional.softmax(logit, axis=1)
        return logit


def custom_ops_of(model: paddle.nn.Layer) -> List[str]:
    """Compiled custom ops the model's forward calls: layers declare them in a
    ``custom_ops`` attribute (a tuple of op names)."""
    needed = set()
    for layer in model.sublayers(include_self=True):
        needed.update(getattr(layer, "custom_ops", ()))
    return sorted(needed)


def export(model: paddle.nn.Layer, save_dir: str, val_transforms_cfg: Sequence[Dict[str, Any]],
           input_shape: Optional[Sequence[int]] = None, output_op: str = "argmax",
           img_channels: int = 3, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Trace ``model`` with ``paddle.jit.to_static`` and save it with ``deploy.yaml``.

    Args:
        model: weights loaded.
        save_dir: output folder (``model.pdmodel``/``.json``, ``model.pdiparams``, ``deploy.yaml``).
        val_transforms_cfg: the val transforms as config dicts (written to deploy.yaml).
        input_shape: ``[N, C, H, W]``; default ``[None, C, None, None]`` (dynamic).
        output_op: ``argmax`` | ``softmax`` | ``none``.

    Returns:
        The deploy.yaml content.
    """
    log = get_logger()
    model.eval()
    shape = list(input_shape) if input_shape else [None, img_channels, None, None]
    if len(shape) != 4:
        raise ValueError(f"input_shape must be N C H W, got {shape}")
    shape = [None if (s is None or int(s) < 0) else int(s) for s in shape]
    net = ExportWrapper(model, output_op)
    net.eval()
    static = paddle.jit.to_static(net, input_spec=[paddle.static.InputSpec(shape, "float32", "x")],
                                  full_graph=True)
    os.makedirs(save_dir, exist_ok=True)
    prefix = os.path.join(save_dir, "model")
    paddle.jit.save(static, prefix)
    model_file = next((f for f in ("model.json", "model.pdmodel") if os.path.isfile(os.path.join(save_dir, f))),
                      "model.json")
    deploy = {
        "Deploy": {
            "model": model_file,
            "params": "model.pdiparams",
            "transforms": copy.deepcopy(list(val_transforms_cfg)),
            "input_shape": shape,
            "output_op": output_op,
            "output_dtype": "int32" if output_op == "argmax" else "float32",
            "custom_ops": custom_ops_of(model),
        }
    }
    if extra:
        deploy["Deploy"].update(extra)
    with open(os.path.join(save_dir, "deploy.yaml"), "w") as f:
        yaml.safe_dump(deploy, f, sort_keys=False)
    log.info("[EXPORT] saved %s and deploy.yaml to %s", model_file, save_dir)
    return deploy
