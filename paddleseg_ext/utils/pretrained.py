"""Loading pretrained weights (local ``.pdparams``, URL or keyword) with a key report."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import paddle
import paddle.nn as nn

from paddleseg_ext.checkpoints.adapters import to_native
from paddleseg_ext.checkpoints.safe_load import load_weights_file
from paddleseg_ext.checkpoints.weights import unwrap_training_checkpoint

logger = logging.getLogger("paddleseg_ext")

# keyword -> function returning a local .pdparams path (e.g. weights shipped in a wheel).
_KEYWORDS: Dict[str, Callable[[], str]] = {}


def register_pretrained_keyword(name: str, resolve: Callable[[], str]) -> None:
    """Let ``pretrained: <name>`` stand for the file ``resolve()`` returns.

    Raises:
        ValueError: ``name`` is already registered.
    """
    if name in _KEYWORDS:
        raise ValueError(f"pretrained keyword {name!r} is already registered")
    _KEYWORDS[name] = resolve


def _resolve(path_or_url: str) -> str:
    """Local file path for ``path_or_url`` (downloads and unpacks URLs)."""
    path = str(path_or_url)
    if path in _KEYWORDS:
        return _KEYWORDS[path]()
    if path.startswith(("http://", "https://")):
        from paddle.utils.download import get_weights_path_from_url
        path = get_weights_path_from_url(path)  # unpacks .tar.gz into a directory
    if os.path.isdir(path):
        # PaddleSeg's ImageNet archives unpack to <dir>/model.pdparams.
        candidates = sorted(f for f in os.listdir(path) if f.endswith(".pdparams"))
        if "model.pdparams" in candidates:
            candidates = ["model.pdparams"]
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"expected exactly one .pdparams file in directory '{path}', found {candidates}")
        path = os.path.join(path, candidates[0])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: '{path}'")
    return path


def _shape(v: Any) -> Tuple[int, ...]:
    return tuple(int(s) for s in v.shape)


def load_pretrained(model: nn.Layer, path_or_url: str,
                    adapt: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
                    ) -> Dict[str, Any]:
    """Load matching weights from a ``.pdparams`` file or URL into ``model``.

    Keys present in both with equal shapes are loaded; the rest are reported
    (as a warning on the ``paddleseg_ext`` logger) and skipped, so a backbone
    checkpoint with an ImageNet classifier (``fc.*``) loads cleanly. A
    whole-model checkpoint in a peer toolkit's layout (PaddleSeg 2.x, ...) is
    converted exactly and must fit whole (see
    :func:`paddleseg_ext.checkpoints.adapters.to_native`).

    Args:
        model: the layer to fill.
        path_or_url: a local ``.pdparams`` file, a directory holding one, a
            keyword registered with :func:`register_pretrained_keyword`
            (``efficientnet-lite0``), or an http(s) URL (downloaded through
            ``paddle.utils.download.get_weights_path_from_url``; archives are
            unpacked).
        adapt: applied to the file's state dict before keys are matched (a
            backbone maps its ImageNet stem onto another band count with it).

    Returns:
        ``{"path": str, "loaded": [keys], "missing": [model keys not in file],
        "unexpected": [file keys not in model], "mismatched":
        [(key, file_shape, model_shape)]}``.

    Raises:
        FileNotFoundError: the path does not exist (message names it).
        ValueError: the file does not hold a state dict, or it is a peer's
            whole-model checkpoint that does not fit ``model``.
    """
    path = _resolve(path_or_url)
    state = load_weights_file(path)
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' does not contain a state dict (got {type(state).__name__})")
    weights = unwrap_training_checkpoint(state, path)  # mmseg / mmengine {'meta', 'state_dict', ...}
    meta, state = (state.get("meta") if weights is not state else None), weights
    # A whole-model checkpoint in a peer's layout is converted exactly, and then must fit
    # whole (to_native refuses it otherwise); an unrecognised partial file (a backbone's
    # ImageNet weights, ...) keeps the lenient key matching below.
    state, _ = to_native(state, model, source=f"pretrained weights '{path}'", unknown="pass",
                         meta=meta)
    if adapt is not None:
        state = adapt(state)
    own = model.state_dict()
    loaded: List[str] = []
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = []
    to_set = {}
    for key, param in own.items():
        if key not in state:
            continue
        if _shape(state[key]) != _shape(param):
            mismatched.append((key, _shape(state[key]), _shape(param)))
            continue
        to_set[key] = state[key]
        loaded.append(key)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    for key, value in to_set.items():
        # state_dict() holds the live parameters/buffers: copy in place (no
        # warning spam from set_state_dict about the keys we chose to skip).
        target = own[key]
        if not isinstance(value, paddle.Tensor):
            value = paddle.to_tensor(value)
        if value.dtype != target.dtype:
            value = value.astype(target.dtype)
        target.set_value(value)

    name = type(model).__name__
    logger.info("Loaded %d/%d tensors of %s from %s", len(loaded), len(own), name, path)
    if missing:
        logger.warning("%s: %d keys missing from %s: %s", name, len(missing), path, missing)
    if unexpected:
        logger.warning("%s: %d unexpected keys in %s (ignored): %s", name, len(unexpected),
                       path, unexpected)
    if mismatched:
        logger.warning("%s: %d shape-mismatched keys (file shape vs model shape, skipped): %s",
                       name, len(mismatched), mismatched)
    return {"path": path, "loaded": loaded, "missing": missing, "unexpected": unexpected,
            "mismatched": mismatched}
