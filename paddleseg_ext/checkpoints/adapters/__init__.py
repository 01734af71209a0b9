"""Whole-model checkpoints in other toolkits' layouts, converted exactly on load.

Every module of this package registers its adapters on import (they are all
imported here, so a new ``adapters/<toolkit>.py`` needs no other edit).
:func:`to_native` is the one entry point the loaders use:

* a state dict that already holds every key of the model is native and is
  returned untouched;
* otherwise exactly one adapter must recognise its layout; it converts the
  file, and the result must fill every model key with the right shape and
  place every tensor of the file, or the file is refused with one error that
  names the detected layout and the keys that do not fit (never half-loaded);
* a success logs one line: what was detected and converted, and from where.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import Any, Dict, List, Mapping, Optional, Tuple

import paddle.nn as nn

from .base import (Adapter, Conversion, as_numpy, fold_bias_into_bn, register_adapter,
                   registered_adapters, rename_prefix)

__all__ = ["Adapter", "Conversion", "as_numpy", "detect_adapter", "fold_bias_into_bn",
           "register_adapter", "registered_adapters", "rename_prefix", "to_native"]

logger = logging.getLogger("paddleseg_ext")

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

_EXAMPLES = 5


def _shape(v) -> Tuple[int, ...]:
    return tuple(int(s) for s in v.shape)


def _some(keys: List, n: int = _EXAMPLES) -> str:
    return ", ".join(str(k) for k in keys[:n]) + (", ..." if len(keys) > n else "")


def detect_adapter(keys: List[str], model: nn.Layer, source: str = "checkpoint") -> Optional[Adapter]:
    """The one adapter that recognises ``keys``, or None when none does.

    Raises:
        ValueError: more than one adapter claims the layout (names them).
    """
    hits = [a for a in registered_adapters() if a.detect(keys, model)]
    if len(hits) > 1:
        raise ValueError(f"{source}: the checkpoint's keys match several layouts "
                         f"({', '.join(a.name for a in hits)}); cannot tell which one it is")
    return hits[0] if hits else None


def to_native(state: Mapping[str, object], model: nn.Layer, source: str = "checkpoint",
              unknown: str = "error", meta: Any = None
              ) -> Tuple[Mapping[str, object], Optional[Conversion]]:
    """Bring a whole-model state dict into this toolkit's layout for ``model``.

    Args:
        state: the loaded state dict (tensors or arrays).
        model: the model it is meant for.
        source: where ``state`` came from (a path), for messages.
        unknown: what to do when the state is not native and no adapter
            recognises it: ``"error"`` (raise, naming the adapters tried and
            the missing keys) or ``"pass"`` (return it unchanged; the caller
            reports key mismatches itself, as ``model.pretrained`` does for
            partial checkpoints).
        meta: what the file records about itself besides its tensors (a peer
            checkpoint's ``meta``), checked by the adapter that has a
            ``check_meta`` (mmsegmentation's recorded config).

    Returns:
        ``(state, None)`` for a native (or, with ``unknown="pass"``,
        unrecognised) state dict, else ``(converted numpy state, Conversion)``.

    Raises:
        ValueError: the layout is ambiguous, unrecognised (with
            ``unknown="error"``), or the converted file does not fit ``model``.
    """
    if unknown not in ("error", "pass"):
        raise ValueError(f"to_native: unknown must be 'error' or 'pass', got {unknown!r}")
    own = model.state_dict()
    keys = list(state)
    if all(k in state for k in own):
        return state, None
    name = type(model).__name__
    adapter = detect_adapter(keys, model, source)
    if adapter is None:
        if unknown == "pass":
            return state, None
        missing = [k for k in own if k not in state]
        tried = ", ".join(a.name for a in registered_adapters()) or "none registered"
        raise ValueError(f"{source} does not fit {name} and is in no known layout (adapters "
                         f"tried: {tried}): {len(missing)} of {len(own)} model keys missing "
                         f"(e.g. {_some(missing)})")
    try:
        conv = adapter.convert(as_numpy(state), model)
    except ValueError as e:  # an adapter's own refusal (the model is the wrong variant, ...)
        raise ValueError(f"{source}: {e}") from e
    _check_fits(conv, own, name, source)
    if adapter.check_meta is not None and meta is not None:
        try:
            adapter.check_meta(meta, model)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e
    logger.info("%s: %s", source, conv.summary())
    return conv.state, conv


def _check_fits(conv: Conversion, own: Mapping[str, object], name: str, source: str) -> None:
    """Refuse a conversion that leaves a tensor unplaced or a model key unfilled."""
    unplaced = list(conv.unplaced) + [k for k in conv.state if k not in own]
    missing = [k for k in own if k not in conv.state]
    mismatched = [f"{k} {list(_shape(conv.state[k]))} vs {list(_shape(own[k]))}"
                  for k in own if k in conv.state and _shape(conv.state[k]) != _shape(own[k])]
    if not (unplaced or missing or mismatched):
        return
    parts: Dict[str, List[str]] = {
        "checkpoint tensors with no place in the model": unplaced,
        "model keys the checkpoint does not fill": missing,
        "shape mismatches (checkpoint vs model)": mismatched,
    }
    detail = "; ".join(f"{len(v)} {what} ({_some(v)})" for what, v in parts.items() if v)
    hint = f". {conv.hint}" if conv.hint else ""
    raise ValueError(f"{source}: detected a {conv.layout} checkpoint, but it does not fit this "
                     f"{name}: {detail}{hint}")
