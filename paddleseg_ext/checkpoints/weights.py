"""Model weights for evaluation, prediction, export and conversion.

``--model_path`` takes a ``.pdparams`` file or a training checkpoint folder
(:mod:`paddleseg_ext.checkpoints.training`); a peer toolkit's whole-model
layout is converted exactly (:mod:`paddleseg_ext.checkpoints.adapters`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Tuple

import numpy as np
import paddle

from .adapters import to_native
from .safe_load import UnsafeWeightsError, load_weights_file

logger = logging.getLogger("paddleseg_ext")


def unwrap_training_checkpoint(obj: Dict[str, Any], path: str) -> Dict[str, Any]:
    """The model weights of a training checkpoint that wraps them, else ``obj`` itself
    (for ``--model_path``, ``model.pretrained`` and the converter).

    mmsegmentation / mmengine save ``{'meta', 'state_dict'[, 'message_hub',
    'optimizer', 'param_schedulers']}``; only ``state_dict`` holds weights.
    The other entries are left out (and named in the log). Objects the
    reader only set aside by name (mmengine's log buffers) must not be inside
    the weights.
    """
    inner = obj.get("state_dict")
    if not isinstance(inner, dict) or any(isinstance(v, np.ndarray) for v in obj.values()):
        return obj
    bad = [k for k, v in inner.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"Model weights {path}: 'state_dict' holds {len(bad)} entries that are "
                         f"not tensors (e.g. {bad[:3]}); not a model state dict")
    others = sorted(str(k) for k in obj if k != "state_dict")
    logger.info("%s: a training checkpoint; loading its 'state_dict'%s", path,
                f", leaving out {', '.join(others)}" if others else "")
    return inner


def read_checkpoint(path: str) -> Tuple[Dict[str, Any], Any]:
    """The state dict in the file at ``path`` and what the file records about itself (the
    ``meta`` of a training checkpoint that wraps its weights, else ``None``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read or holds no state dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model weights not found: {path}")
    try:
        state = load_weights_file(path)
    except UnsafeWeightsError:
        raise
    except Exception as e:
        raise ValueError(f"Model weights {path} cannot be read ({type(e).__name__}: {e}); the file is "
                         "damaged or not a .pdparams file") from e
    if not isinstance(state, dict):
        raise ValueError(f"Model weights {path} hold a {type(state).__name__}, not a state dict")
    weights = unwrap_training_checkpoint(state, path)
    return weights, (state.get("meta") if weights is not state else None)


def read_model_weights(path: str) -> Dict[str, Any]:
    """The state dict in the ``.pdparams`` file at ``path`` (for ``--model_path`` and the converter).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read or holds no state dict.
    """
    return read_checkpoint(path)[0]


def load_model_weights(model: paddle.nn.Layer, path: str) -> None:
    """Load weights for eval/predict from a ``.pdparams`` file or a checkpoint folder.

    A whole-model checkpoint in a peer toolkit's layout (see
    :mod:`paddleseg_ext.checkpoints.adapters`) is detected from its keys and
    converted exactly in memory; one that does not fit is refused.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "model.pdparams")
    state, meta = read_checkpoint(path)
    # Another toolkit's whole-model layout (PaddleSeg 2.x, ...) is converted exactly or refused,
    # also when the config the file records builds another function than the model's.
    state, _ = to_native(state, model, source=f"Model weights {path}", meta=meta)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [k for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or mismatched:
        raise ValueError(f"Weights {path} do not fit {type(model).__name__}: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(mismatched)} shape-mismatched (e.g. {mismatched[:3]})")
    model.set_state_dict(state)
