"""Training checkpoints (model, optimizer, RNG and loop state), written atomically.

Reading a model's weights alone, for evaluation, prediction and export, is
:mod:`paddleseg_ext.checkpoints.weights`.

A checkpoint is a folder ``iter_N/`` holding ``model.pdparams``,
``model.pdopt``, ``rng.pkl`` and ``state.json`` (iteration, LR-scheduler
state, best metric, and the size of every other file). It is written to
``.iter_N.tmp``, flushed to disk, and renamed into place, so a kill during a
save never leaves a half checkpoint under a real name; ``latest_checkpoint``
only ever sees complete ones (``state.json`` present and every listed file
at its recorded size). :func:`recover` tidies what a kill can leave behind
(temporary folders, a checkpoint renamed aside while being replaced).
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

from .safe_load import UnsafeWeightsError, load_optimizer_file, load_rng_file, load_weights_file

_ITER_DIR = re.compile(r"^iter_(\d+)$")
_AUX_DIR = re.compile(r"^\.(.+)\.(tmp|old|del)$")
COMPLETE_MARK = "state.json"
FILES_KEY = "_files"


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


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)


def save_checkpoint(save_dir: str, name: str, model: paddle.nn.Layer,
                    optimizer: Optional[paddle.optimizer.Optimizer] = None,
                    state: Optional[Dict[str, Any]] = None,
                    extra: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """Write ``save_dir/name`` atomically and return its path.

    ``extra`` maps a name to more weights saved as ``<name>.pdparams`` in the
    same folder (e.g. a hook's weight average; read back with :func:`load_extra`).

    Raises:
        OSError: the save failed (disk full, no permission, ...); the message
            names the folder, the temporary folder is removed, and an earlier
            checkpoint of the same name is left as it was.
    """
    final = os.path.join(save_dir, name)
    tmp = os.path.join(save_dir, f".{name}.tmp")
    try:
        os.makedirs(save_dir, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        paddle.save(model.state_dict(), os.path.join(tmp, "model.pdparams"))
        if optimizer is not None:
            paddle.save(_rename_keys(optimizer.state_dict(), _param_names(model)),
                        os.path.join(tmp, "model.pdopt"))
        for key, tensors in (extra or {}).items():
            paddle.save(tensors, os.path.join(tmp, f"{key}.pdparams"))
        with open(os.path.join(tmp, "rng.pkl"), "wb") as f:
            pickle.dump(_rng_state(), f)
        files = {}
        for fname in sorted(os.listdir(tmp)):
            fpath = os.path.join(tmp, fname)
            _fsync_file(fpath)
            files[fname] = os.path.getsize(fpath)
        # state.json last: its presence (and the sizes it lists) marks a complete checkpoint.
        with open(os.path.join(tmp, COMPLETE_MARK), "w") as f:
            json.dump(dict(state or {}, **{FILES_KEY: files}), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = (f"could not save checkpoint {final}: {e.strerror or e}"
               + (f" (the earlier {name} is unchanged)" if os.path.isdir(final) else ""))
        raise (type(e)(e.errno, msg) if e.errno is not None else type(e)(msg)) from e
    old = os.path.join(save_dir, f".{name}.old")
    if os.path.exists(final):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(save_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _read_state(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(path, COMPLETE_MARK), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def is_complete(path: str) -> bool:
    """``state.json`` is readable and every file it lists has its recorded size."""
    if not os.path.isfile(os.path.join(path, "model.pdparams")):
        return False
    state = _read_state(path)
    if state is None:
        return False
    for fname, size in (state.get(FILES_KEY) or {}).items():
        fpath = os.path.join(path, fname)
        if not os.path.isfile(fpath) or os.path.getsize(fpath) != size:
            return False
    return True


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


def _remove(path: str) -> None:
    """Delete a checkpoint folder: renamed aside first, so a kill half way never leaves a
    folder under its real name that lost some of its files."""
    d, base = os.path.split(path)
    aside = os.path.join(d, f".{base}.del")
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(path, aside)
    except OSError:
        aside = path
    shutil.rmtree(aside, ignore_errors=True)


def prune_checkpoints(save_dir: str, keep: int) -> None:
    """Keep the newest ``keep`` iter_N folders (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for path in list_checkpoints(save_dir)[:-keep]:
        _remove(path)


def recover(save_dir: str) -> List[str]:
    """Tidy what an interrupted save / prune leaves in ``save_dir``; return what was done.

    * ``.NAME.old`` without ``NAME`` (killed while replacing ``NAME``): the
      complete new copy ``.NAME.tmp`` is moved into place, else the old one back.
    * Every other ``.NAME.tmp`` / ``.NAME.old`` / ``.NAME.del`` is deleted.
    """
    done: List[str] = []
    if not os.path.isdir(save_dir):
        return done
    entries = os.listdir(save_dir)
    for d in entries:
        m = _AUX_DIR.match(d)
        if not m or m.group(2) != "old":
            continue
        name = m.group(1)
        final = os.path.join(save_dir, name)
        if os.path.exists(final):
            continue
        tmp = os.path.join(save_dir, f".{name}.tmp")
        src = tmp if os.path.isdir(tmp) and is_complete(tmp) else os.path.join(save_dir, d)
        if is_complete(src):
            os.replace(src, final)
            done.append(f"restored {final} from {os.path.basename(src)}")
    for d in os.listdir(save_dir):
        if _AUX_DIR.match(d):
            shutil.rmtree(os.path.join(save_dir, d), ignore_errors=True)
            done.append(f"removed {d}")
    return done


def load_extra(path: str, key: str) -> Optional[Dict[str, Any]]:
    """The ``extra`` weights ``key`` saved with checkpoint ``path``, or None where it has none."""
    fpath = os.path.join(path, f"{key}.pdparams")
    if not os.path.isfile(fpath):
        return None
    try:
        return load_weights_file(fpath)
    except UnsafeWeightsError:
        raise
    except Exception as e:
        raise ValueError(f"Checkpoint {path}: {key}.pdparams cannot be read ({type(e).__name__}: {e}); it "
                         "is damaged. Use an older one or --resume_model auto") from e


def load_checkpoint(path: str, model: paddle.nn.Layer,
                    optimizer: Optional[paddle.optimizer.Optimizer] = None,
                    restore_rng: bool = True) -> Dict[str, Any]:
    """Restore model (+ optimizer, RNG) from a checkpoint folder; return its state dict."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Checkpoint folder not found: {path}")
    if not is_complete(path):
        raise ValueError(f"Checkpoint {path} is incomplete (no readable {COMPLETE_MARK}, or a file "
                         "smaller than recorded); it was interrupted while saving or copying. Use an "
                         "older one or --resume_model auto")
    state = _read_state(path) or {}
    files = state.pop(FILES_KEY, None)
    try:
        params = load_weights_file(os.path.join(path, "model.pdparams"))
        opt_path = os.path.join(path, "model.pdopt")
        opt_state = load_optimizer_file(opt_path) if optimizer is not None and os.path.isfile(opt_path) else None
        rng = None
        rng_path = os.path.join(path, "rng.pkl")
        if restore_rng and os.path.isfile(rng_path):
            rng = load_rng_file(rng_path)
    except UnsafeWeightsError:
        raise  # names the file and the refused object; not "damaged"
    except Exception as e:  # unpickling errors of all kinds: a damaged file
        raise ValueError(f"Checkpoint {path} cannot be read ({type(e).__name__}: {e}); it is "
                         "damaged. Use an older one or --resume_model auto") from e
    if optimizer is not None and opt_state is None and files is not None and "model.pdopt" in files:
        raise ValueError(f"Checkpoint {path} lost its model.pdopt")
    own = model.state_dict()
    bad = [k for k in own if k in params and list(params[k].shape) != list(own[k].shape)]
    if bad:
        raise ValueError(f"Checkpoint {path} does not fit {type(model).__name__}: {len(bad)} "
                         f"shape-mismatched weights (e.g. {bad[:3]}); was it saved from another config?")
    model.set_state_dict(params)
    if opt_state is not None:
        to_runtime = {v: k for k, v in _param_names(model).items()}
        optimizer.set_state_dict(_rename_keys(opt_state, to_runtime))
    if rng is not None:
        _set_rng_state(rng)
    return state
