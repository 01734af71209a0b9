"""Training checkpoints, written atomically.

A checkpoint is a folder ``iter_N/`` holding ``model.pdparams``,
``model.pdopt`` and ``state.json`` (iteration, LR-scheduler state, RNG
states, best metric). It is written to ``.iter_N.tmp`` and renamed into place,
so a kill during a save never leaves a half checkpoint under a real name;
``latest_checkpoint`` only ever sees complete ones.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from typing import Any, Dict, List, Optional

import numpy as np
import paddle

_ITER_DIR = re.compile(r"^iter_(\d+)$")
COMPLETE_MARK = "state.json"


def _rng_state() -> Dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "paddle": paddle.get_rng_state()}


def _set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


def _rename_keys(state: Dict[str, Any], mapping: Dict[str, str]) -> Dict[str, Any]:
    """Rename optimizer-state keys ``<param name><suffix>`` through ``mapping``.

    Paddle keys optimizer accumulators by the parameters' auto-generated
    names (``conv2d_58.w_0_velocity_0``), which depend on how many layers
    the process built before; keyed by the structured names
    (``backbone.stem.0.conv.weight_velocity_0``) a checkpoint loads into any
    process that builds the same model.
    """
    by_len = sorted(mapping, key=len, reverse=True)

    def rename(key: str) -> str:
        for src in by_len:
            if key == src or key.startswith(src + "_"):
                return mapping[src] + key[len(src):]
        return key

    out: Dict[str, Any] = {}
    for k, v in state.items():
        out[rename(k)] = _rename_keys(v, mapping) if isinstance(v, dict) and k == "master_weights" else v
    return out


def _param_names(model: paddle.nn.Layer) -> Dict[str, str]:
    return {p.name: n for n, p in model.named_parameters()}


def save_checkpoint(save_dir: str, name: str, model: paddle.nn.Layer,
                    optimizer: Optional[paddle.optimizer.Optimizer] = None,
                    state: Optional[Dict[str, Any]] = None) -> str:
    """Write ``save_dir/name`` atomically and return its path."""
    final = os.path.join(save_dir, name)
    tmp = os.path.join(save_dir, f".{name}.tmp")
    os.makedirs(save_dir, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    paddle.save(model.state_dict(), os.path.join(tmp, "model.pdparams"))
    if optimizer is not None:
        paddle.save(_rename_keys(optimizer.state_dict(), _param_names(model)),
                    os.path.join(tmp, "model.pdopt"))
    with open(os.path.join(tmp, "rng.pkl"), "wb") as f:
        pickle.dump(_rng_state(), f)
    # state.json last: its presence marks a complete checkpoint.
    with open(os.path.join(tmp, COMPLETE_MARK), "w") as f:
        json.dump(state or {}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    old = os.path.join(save_dir, f".{name}.old")
    if os.path.exists(final):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "model.pdparams")) and \
        os.path.isfile(os.path.join(path, COMPLETE_MARK))


def list_checkpoints(save_dir: str) -> List[str]:
    """Complete ``iter_N`` checkpoints, oldest first."""
    if not os.path.isdir(save_dir):
        return []
    found = []
    for d in os.listdir(save_dir):
        m = _ITER_DIR.match(d)
        if m and is_complete(os.path.join(save_dir, d)):
            found.append((int(m.group(1)), os.path.join(save_dir, d)))
    return [p for _, p in sorted(found)]


def latest_checkpoint(save_dir: str) -> Optional[str]:
    ckpts = list_checkpoints(save_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(save_dir: str, keep: int) -> None:
    """Keep the newest ``keep`` iter_N folders (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for path in list_checkpoints(save_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: str, model: paddle.nn.Layer,
                    optimizer: Optional[paddle.optimizer.Optimizer] = None,
                    restore_rng: bool = True) -> Dict[str, Any]:
    """Restore model (+ optimizer, RNG) from a checkpoint folder; return its state dict."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Checkpoint folder not found: {path}")
    if not is_complete(path):
        raise ValueError(f"Checkpoint {path} is incomplete (no {COMPLETE_MARK}); it was "
                         "interrupted while saving. Use an older one or --resume_model auto")
    model.set_state_dict(paddle.load(os.path.join(path, "model.pdparams")))
    opt_path = os.path.join(path, "model.pdopt")
    if optimizer is not None and os.path.isfile(opt_path):
        to_runtime = {v: k for k, v in _param_names(model).items()}
        optimizer.set_state_dict(_rename_keys(paddle.load(opt_path), to_runtime))
    rng_path = os.path.join(path, "rng.pkl")
    if restore_rng and os.path.isfile(rng_path):
        with open(rng_path, "rb") as f:
            _set_rng_state(pickle.load(f))
    with open(os.path.join(path, COMPLETE_MARK)) as f:
        return json.load(f)


def load_model_weights(model: paddle.nn.Layer, path: str) -> None:
    """Load weights for eval/predict from a ``.pdparams`` file or a checkpoint folder."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.pdparams")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model weights not found: {path}")
    state = paddle.load(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [k for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or mismatched:
        raise ValueError(f"Weights {path} do not fit {type(model).__name__}: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(mismatched)} shape-mismatched (e.g. {mismatched[:3]})")
    model.set_state_dict(state)
