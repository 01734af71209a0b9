"""Rewrites: faster or export-specific forms of paper layers, applied by :func:`prepare`.

A paper layer computes its function with plain Paddle ops. Each faster or export-specific
way to compute the same function is a *form*: a subclass of the layer (same parameters,
buffers and sub-layers, so ``state_dict()`` keys and checkpoints never change) that overrides
``forward``. A *rewrite* is a registered function that turns the layers it knows into their
form for the targets it declares (``train``, ``infer``, ``export``, ``onnx``); it is
detectron2's ``FrozenBatchNorm2d.convert_frozen_batchnorm`` pattern, declared and tested.

:func:`prepare` first turns every form back into its paper layer, then applies, in
registration order, each rewrite whose targets include the policy's and whose ``enabled``
check passes. ``train`` changes the model in place (the optimizer keeps its parameters);
every other target works on a deep copy in eval mode, so the model a tool trains or saves is
never an inference or export variant.

``tests/test_rewrites.py`` checks every registered (model, rewrite) pair for values,
gradients, keys and a traced program.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Dict, List, Optional, Tuple, Type

import paddle.nn as nn

from ..utils.logger import get_logger
from .policy import TARGETS, ExecutionPolicy, current_policy

__all__ = ["Rewrite", "register_rewrite", "registered_rewrites", "prepare", "to_form", "to_plain",
           "applied_rewrites"]


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """One registered rewrite.

    Attributes:
        name: short name (logged, and listed in ``model.applied_rewrites``).
        targets: the policy targets it serves.
        apply: ``apply(model, policy) -> int``: converts the layers it knows in place and
            returns how many it converted.
        enabled: ``enabled(policy) -> bool``: whether the policy asks for it (default always).
        doc: one line: what it does and why it is the same function.
    """

    name: str
    targets: Tuple[str, ...]
    apply: Callable[[nn.Layer, ExecutionPolicy], int]
    enabled: Callable[[ExecutionPolicy], bool]
    doc: str


_REWRITES: Dict[str, Rewrite] = {}


def register_rewrite(name: str, targets: Tuple[str, ...], doc: str,
                     enabled: Optional[Callable[[ExecutionPolicy], bool]] = None):
    """Decorator registering ``apply(model, policy) -> int`` as the rewrite ``name``."""
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"rewrite {name!r}: targets must be a non-empty subset of {list(TARGETS)}, "
                         f"got {targets!r}")

    def wrap(fn: Callable[[nn.Layer, ExecutionPolicy], int]):
        if name in _REWRITES:
            raise ValueError(f"rewrite {name!r} is registered twice")
        _REWRITES[name] = Rewrite(name, tuple(targets), fn, enabled or (lambda policy: True), doc)
        return fn

    return wrap


def registered_rewrites() -> List[Rewrite]:
    """Every registered rewrite, in the order :func:`prepare` applies them."""
    from . import forms  # noqa: F401  (registers the package's rewrites)

    return list(_REWRITES.values())


def to_form(layer: nn.Layer, form: Type[nn.Layer], **attributes) -> nn.Layer:
    """Turn ``layer`` into its ``form`` in place (a subclass of its class) and set attributes.

    The layer keeps its parameters, buffers, sub-layers and their names: only ``forward``
    (and whatever the form adds) changes.
    """
    plain = getattr(form, "plain_class", None)
    if plain is None or not isinstance(layer, plain):
        raise TypeError(f"{form.__name__} is a form of {getattr(plain, '__name__', plain)}, "
                        f"not of {type(layer).__name__}")
    layer.__class__ = form
    for key, value in attributes.items():
        setattr(layer, key, value)
    return layer


def to_plain(model: nn.Layer) -> int:
    """Turn every form in ``model`` back into its paper layer; returns how many."""
    n = 0
    for layer in model.sublayers(include_self=True):
        plain = getattr(type(layer), "plain_class", None)
        if plain is not None and type(layer) is not plain:
            for key in getattr(type(layer), "form_attributes", ()):
                layer.__dict__.pop(key, None)
            layer.__class__ = plain
            n += 1
    return n


def applied_rewrites(model: nn.Layer) -> List[str]:
    """``name: count`` of the rewrites :func:`prepare` applied to ``model``."""
    return list(getattr(model, "applied_rewrites", []))


def prepare(model: nn.Layer, policy: Optional[ExecutionPolicy] = None,
            copy_model: Optional[bool] = None) -> nn.Layer:
    """``model`` in the forms that ``policy`` (default: the current one) asks for.

    Args:
        model: a paper model (or one prepared before: its forms are undone first).
        policy: the execution policy; its ``target`` selects the rewrites.
        copy_model: work on a deep copy; default: a copy for every target but ``train``.

    Returns:
        The prepared model (``model`` itself for ``train``); ``.applied_rewrites`` lists
        ``name: count`` for each rewrite that converted something.
    """
    policy = policy or current_policy()
    if copy_model is None:
        copy_model = policy.target != "train"
    net = copy.deepcopy(model) if copy_model else model
    to_plain(net)
    if policy.target == "train":
        net.train()
    else:
        net.eval()
    applied = []
    for rewrite in registered_rewrites():
        if policy.target in rewrite.targets and rewrite.enabled(policy):
            n = rewrite.apply(net, policy)
            if n:
                applied.append(f"{rewrite.name}: {n}")
    net.applied_rewrites = applied
    if applied:
        get_logger().debug("prepared for %s: %s", policy.target, ", ".join(applied))
    return net
