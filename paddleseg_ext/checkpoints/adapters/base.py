"""The adapter contract: detect a peer's checkpoint layout, convert it exactly.

An adapter is registered per (toolkit, model) with :func:`register_adapter`:

* ``detect(keys, model) -> bool`` looks only at the checkpoint's key names
  (and the target model's class/config) and says whether the file is in the
  peer's layout for this model;
* ``convert(state, model) -> Conversion`` returns a state dict in this
  toolkit's layout;
* optionally ``check_meta(meta, model)`` refuses a model whose function
  differs from what the file records about itself beyond its tensors (a
  peer's ``meta``, e.g. mmsegmentation's config text, read by
  :mod:`paddleseg_ext.checkpoints.recorded_config`).

Conversions are exact: renames, and a conv bias that precedes a BatchNorm
folded into that BatchNorm's running mean (``BN(conv(x) + b) == BN'(conv(x))``
with ``mean' = mean - b``). An adapter
  never drops a tensor and never guesses: what it cannot place is reported in
  ``Conversion.unplaced`` and the loader refuses the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["Conversion", "Adapter", "register_adapter", "registered_adapters",
           "fold_bias_into_bn", "as_numpy", "rename_prefix", "TensorMover",
           "COUNTER_REASON", "model_is"]


@dataclass
class Conversion:
    """The result of converting a peer checkpoint.

    Attributes:
        layout: human-readable name of the detected layout, e.g.
            ``"PaddleSeg 2.x PSPNet"``.
        state: the converted state dict (this toolkit's key names).
        renamed: number of tensors whose key changed.
        folded: BatchNorm prefixes whose running mean absorbed a conv bias.
        unplaced: peer keys that have no place in the target model (a
            non-empty list makes the loader refuse the checkpoint).
        hint: what the target model must be for this layout (e.g. the
            config switch that builds the peer's variant); quoted when the
            checkpoint is refused.
        unused: peer keys of layers the peer builds but its forward never
            calls (so they never influence its outputs and were never
            trained); named one by one in the adapter, reported in
            :meth:`summary`, not loaded.
        not_loaded: peer keys deliberately left out because they hold no part
            of the network's function (e.g. a BatchNorm's
            ``num_batches_tracked`` step counter), by reason; reported in
            :meth:`summary`.
    """

    layout: str
    state: Dict[str, np.ndarray]
    renamed: int = 0
    folded: List[str] = field(default_factory=list)
    unplaced: List[str] = field(default_factory=list)
    hint: str = ""
    unused: List[str] = field(default_factory=list)
    not_loaded: Dict[str, List[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the layout, tensors converted, biases folded (and unused peer tensors)."""
        text = (f"detected {self.layout} checkpoint: {len(self.state)} tensors, "
                f"{self.renamed} renamed, {len(self.folded)} conv biases folded into BatchNorm")
        if self.unused:
            text += (f", {len(self.unused)} tensors of a layer the peer never calls left out "
                     f"({', '.join(self.unused)})")
        for reason, keys in self.not_loaded.items():
            text += f", {len(keys)} {reason} not loaded"
        return text


@dataclass(frozen=True)
class Adapter:
    """A registered (toolkit, model) converter."""

    name: str
    detect: Callable[[Sequence[str], object], bool]
    convert: Callable[[Mapping[str, np.ndarray], object], Conversion]
    check_meta: Optional[Callable[[Any, object], None]] = None


_ADAPTERS: Dict[str, Adapter] = {}


def register_adapter(name: str, detect: Callable, convert: Callable,
                     check_meta: Optional[Callable] = None) -> Adapter:
    """Register an adapter under a unique ``name`` (e.g. ``"paddleseg.pspnet"``)."""
    if name in _ADAPTERS:
        raise KeyError(f"checkpoint adapter '{name}' is already registered")
    adapter = Adapter(name, detect, convert, check_meta)
    _ADAPTERS[name] = adapter
    return adapter


def registered_adapters() -> List[Adapter]:
    """Every registered adapter, in registration order."""
    return list(_ADAPTERS.values())


def as_numpy(state: Mapping[str, object]) -> Dict[str, np.ndarray]:
    """A copy of ``state`` with every value as a NumPy array (Paddle tensors included)."""
    return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in state.items()}


def rename_prefix(state: Dict[str, np.ndarray], out: Dict[str, np.ndarray], src: str,
                  dst: str) -> int:
    """Move every ``src...`` key of ``state`` to ``dst...`` in ``out``; return how many moved.

    ``src`` and ``dst`` are key prefixes (``"head.conv."`` -> ``"cls."``) or
    whole keys; keys are removed from ``state`` as they are moved, so what is
    left in ``state`` at the end is what no rule placed.
    """
    moved = 0
    for key in [k for k in state if k == src or (src.endswith(".") and k.startswith(src))]:
        out[dst + key[len(src):]] = state.pop(key)
        moved += 1
    return moved


def fold_bias_into_bn(state: Dict[str, np.ndarray], conv_bias_key: str, bn_prefix: str) -> None:
    """Fold ``state[conv_bias_key]`` into the running mean at ``bn_prefix``.

    ``BN(conv(x) + b) = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta``
    equals ``BN'(conv(x))`` with ``mean' = mean - b``: exact in real numbers,
    one float rounding in practice. The bias key is removed from ``state``.
    """
    bias = np.asarray(state.pop(conv_bias_key))
    mean_key = f"{bn_prefix}._mean"
    mean = np.asarray(state[mean_key])
    if bias.shape != mean.shape:
        raise ValueError(f"cannot fold {conv_bias_key} {bias.shape} into {mean_key} {mean.shape}")
    state[mean_key] = (mean.astype(np.float64) - bias.astype(np.float64)).astype(mean.dtype)


def model_is(model: object, name: str) -> bool:
    """Whether ``model`` is an instance of this toolkit's model class ``name``."""
    # Imported on use: the models import the loaders, which import this package.
    from paddleseg_ext import models

    return isinstance(model, getattr(models, name))


_COUNTER = "num_batches_tracked"
#: How :class:`TensorMover` reports the BatchNorm step counters it sets aside.
COUNTER_REASON = "BatchNorm step counters (num_batches_tracked, unused in eval)"
_BN = (("weight", "weight"), ("bias", "bias"), ("running_mean", "_mean"),
       ("running_var", "_variance"))


class TensorMover:
    """Moves a peer's tensors into our names, counting renames and setting aside BN step counters.

    Every rule pops what it moves from :attr:`src`, so what is left there at
    :meth:`finish` is what no rule placed (the loader refuses the file then).
    Used by the adapters of PyTorch peers (torch BN names ``running_mean`` /
    ``running_var``, Paddle's ``_mean`` / ``_variance``).
    """

    def __init__(self, state: Dict[str, np.ndarray]) -> None:
        self.src: Dict[str, np.ndarray] = dict(state)
        self.out: Dict[str, np.ndarray] = {}
        self.moved = 0
        self.counters: List[str] = []

    def prefix(self, peer: str, ours: str) -> None:
        """Move the key (or every key under the prefix) ``peer`` to ``ours``."""
        self.moved += rename_prefix(self.src, self.out, peer, ours)

    def bn(self, peer: str, ours: str) -> None:
        """A torch ``BatchNorm2d`` at ``peer`` -> Paddle ``BatchNorm2D`` at ``ours``."""
        for theirs, mine in _BN:
            self.prefix(f"{peer}.{theirs}", f"{ours}.{mine}")
        counter = f"{peer}.{_COUNTER}"
        if counter in self.src:
            self.src.pop(counter)
            self.counters.append(counter)

    def conv_bn(self, peer_conv: str, peer_bn: str, ours: str) -> None:
        """A bias-free conv and its BN -> our ConvBN(ReLU) at ``ours``."""
        self.prefix(f"{peer_conv}.weight", f"{ours}._conv.weight")
        self.bn(peer_bn, f"{ours}._batch_norm")

    def scale(self, peer: str, ours: str) -> None:
        """mmcv ``Scale`` (a 0-d parameter) -> our ``[1]`` parameter."""
        if peer in self.src:
            value = np.asarray(self.src.pop(peer))
            self.out[ours] = value.reshape([1]) if value.size == 1 else value
            self.moved += 1

    def finish(self, layout: str, hint: str) -> Conversion:
        """The :class:`Conversion`: what was moved, what is left unplaced, the counters."""
        return Conversion(layout=layout, state=self.out, renamed=self.moved,
                          unplaced=sorted(self.src), hint=hint,
                          not_loaded={COUNTER_REASON: self.counters} if self.counters else {})
