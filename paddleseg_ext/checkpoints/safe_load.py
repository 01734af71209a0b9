"""Read the weights files a user hands the toolkit without running anything in them.

Every ``.pdparams`` / ``.pdopt`` / ``rng.pkl`` the toolkit reads (``pretrained:``,
``--model_path``, ``--resume_model``, the converter) goes through
:func:`load_paddle_file`, which unpickles with
:class:`~paddleseg_ext.checkpoints.restricted_pickle.RestrictedUnpickler` and
then undoes what ``paddle.save`` (Paddle 3.3.1, ``paddle/framework/io.py``)
does to an object before pickling it:

* a state dict's tensors are stored as NumPy arrays, plus a
  ``StructuredToParameterName@@`` table (dropped here, as ``paddle.load`` does);
* a tensor elsewhere in a container is stored as ``(name, ndarray)`` (back to
  the array here);
* with pickle protocol 2 or 3, arrays over 1 GiB are split into
  ``key@@.i`` slices listed under ``UnpackBigParamInfor@@`` (joined here);
  protocol 4, the default, writes them whole.

Values come back as NumPy arrays (``Layer.set_state_dict`` and
``load_pretrained`` take them); :func:`load_optimizer_file` returns Paddle
tensors as ``paddle.load`` did, for ``Optimizer.set_state_dict``. A PyTorch
file (zip or legacy) given as weights is read by
:mod:`~paddleseg_ext.checkpoints.torch_reader`.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np

from .restricted_pickle import UnsafeWeightsError, WeightsFileError, map_nested, restricted_load
from .torch_reader import is_torch_checkpoint, load_torch_checkpoint

__all__ = ["load_paddle_file", "load_weights_file", "load_optimizer_file", "load_rng_file",
           "UnsafeWeightsError", "WeightsFileError"]

_NAME_TABLE = "StructuredToParameterName@@"
_UNPACK_INFO = "UnpackBigParamInfor@@"  # Paddle's spelling


def _join_big_params(obj: Dict[str, Any], path: str) -> Dict[str, Any]:
    info = obj.pop(_UNPACK_INFO, None)
    if info is None:
        return obj
    if not isinstance(info, dict):
        raise WeightsFileError(f"{path}: {_UNPACK_INFO} is a {type(info).__name__}, not a dict")
    for key, meta in info.items():
        try:
            parts = [obj.pop(p) for p in meta["slices"]]
            obj[key] = np.concatenate([np.asarray(p).ravel() for p in parts]).reshape(
                meta["OriginShape"])
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsFileError(f"{path}: the split tensor {key!r} cannot be joined "
                                   f"({type(e).__name__}: {e}); the file is damaged") from e
    return obj


def _untuple(obj: Any) -> Any:
    """``(name, ndarray)`` (paddle.save's form of a tensor) -> ndarray, recursively."""

    def leaf(node: Any) -> Any:
        if isinstance(node, tuple) and len(node) == 2 and isinstance(node[0], str) \
                and isinstance(node[1], np.ndarray):
            return node[1]
        return node

    return map_nested(obj, leaf)


def _open_checked(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if os.path.getsize(path) == 0:
        raise WeightsFileError(f"{path}: the file is empty")


def load_paddle_file(path: str) -> Any:
    """Unpickle a ``paddle.save`` / ``pickle.dump`` file through the allow-list.

    Args:
        path: the file.

    Returns:
        The saved object; tensors as NumPy arrays, ``paddle.save``'s
        bookkeeping (name table, split big tensors) undone.

    Raises:
        FileNotFoundError: no such file.
        UnsafeWeightsError: the file names a global outside the allow-list
            (message names the file and ``module.name``; nothing was run).
        WeightsFileError: empty, truncated or damaged file.
    """
    path = os.fspath(path)
    _open_checked(path)
    with open(path, "rb") as f:
        obj = restricted_load(f, path)
        if f.read(1):
            raise WeightsFileError(f"{path}: data after the end of the pickle; the file is damaged "
                                   "or not a single paddle.save object")
    if isinstance(obj, dict):
        obj = _join_big_params(obj, path)
        obj.pop(_NAME_TABLE, None)
    return _untuple(obj)


def load_weights_file(path: str) -> Dict[str, Any]:
    """Read a model state dict: a ``.pdparams`` file, or a PyTorch ``.pth`` / ``.pt``.

    Args:
        path: the weights file.

    Returns:
        ``{key: np.ndarray}`` (nested containers are kept as they were saved).

    Raises:
        FileNotFoundError, UnsafeWeightsError, WeightsFileError: as
        :func:`load_paddle_file`; also when the file holds no dict.
    """
    path = os.fspath(path)
    _open_checked(path)
    obj = load_torch_checkpoint(path) if is_torch_checkpoint(path) else load_paddle_file(path)
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def load_optimizer_file(path: str) -> Dict[str, Any]:
    """Read a ``.pdopt`` file for ``Optimizer.set_state_dict``.

    Returns:
        The optimizer state with accumulators as ``paddle.Tensor`` (what
        ``paddle.load`` returned) and the LR-scheduler state as plain values.
    """
    import paddle

    state = load_paddle_file(path)
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: holds a {type(state).__name__}, not an optimizer state")

    def to_tensors(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return paddle.to_tensor(obj)
        if isinstance(obj, dict):
            return {k: to_tensors(v) for k, v in obj.items()}
        return obj

    return to_tensors(state)


def load_rng_file(path: str) -> Dict[str, Any]:
    """Read the toolkit's ``rng.pkl`` (Python, NumPy and Paddle generator states)."""
    state = load_paddle_file(path)
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: holds a {type(state).__name__}, not an RNG state dict")
    return state
