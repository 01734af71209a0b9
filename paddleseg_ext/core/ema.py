"""An exponential moving average of the weights, evaluated and kept as ``best_model``.

Polyak & Juditsky, "Acceleration of stochastic approximation by averaging"
(SIAM J. Control Optim., 1992): averaging the iterates of SGD damps the
noise of the last steps. The shadow copy follows the trained weights by
``shadow <- d * shadow + (1 - d) * weights`` after every finite step, with
the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``,
``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first
evaluations are not dominated by the random initialisation. Every floating
entry of the state dict is averaged, BatchNorm's running statistics too (the
shadow's activations differ from the trained model's, so its statistics
should follow the averaged weights as well); integer entries are copied.

With the hook on, evaluation, best-model tracking, early stopping and
``best_model`` all use the shadow (``storage.eval_model``); ``iter_N``
checkpoints hold the trained weights and, in ``ema.pdparams``, the shadow, so
a resumed run continues both.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import paddle

from ..cvlibs.validators import Rule, validated
from .hooks_base import Hook

#: ``decay``: a number in (0, 1) (0 would make the shadow the weights themselves, 1 freeze it).
DECAY = Rule("a number in (0, 1)", lambda v: not isinstance(v, bool) and isinstance(v, (int, float))
             and math.isfinite(v) and 0 < v < 1, float, kind="number")


@validated(decay=DECAY)
@dataclass(frozen=True)
class WeightAveraging:
    """How the weights are averaged.

    Args:
        decay: the largest weight of the old shadow in each update, in (0, 1); the
            shadow averages roughly the last ``1 / (1 - decay)`` steps.

    Raises:
        ValueError: ``decay`` outside (0, 1) (the rule's message names the value).
    """

    decay: float = 0.99

    def decay_at(self, updates: int) -> float:
        """The decay of update number ``updates + 1`` (warm-up: small early on)."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates))


class EMAHook(Hook):
    """Keeps the moving average in a copy of the model (``storage.eval_model``).

    Runs right after the NaN guard and before the checkpoint, so an ``iter_N``
    holds the shadow of the same step; a non-finite step (skipped by the NaN
    policy) does not update it.
    """

    name = "ema"

    def __init__(self, rule: WeightAveraging) -> None:
        self.rule = rule
        self.updates = 0
        self.shadow: Optional[paddle.nn.Layer] = None
        self._loaded: Optional[Dict[str, Any]] = None

    # -- checkpointed state ----------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.rule.decay, "updates": self.updates}

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        self.updates = int((state or {}).get("updates", 0))

    def tensors(self) -> Optional[Dict[str, paddle.Tensor]]:
        """The shadow's weights, saved as ``ema.pdparams`` beside ``model.pdparams``."""
        return None if self.shadow is None else self.shadow.state_dict()

    def load_tensors(self, tensors: Optional[Dict[str, Any]]) -> None:
        """The shadow of a resumed checkpoint (None: the checkpoint has none; start from the weights)."""
        self._loaded = tensors
        if tensors is None:
            self.updates = 0

    # -- events ----------------------------------------------------------------
    def before_train(self, t: Any) -> None:
        self.shadow = copy.deepcopy(t.model)
        self.shadow.eval()
        for p in self.shadow.parameters():
            p.stop_gradient = True
        if self._loaded is not None:
            self.shadow.set_state_dict(self._loaded)
            self._loaded = None
        t.storage.eval_model = self.shadow

    @paddle.no_grad()
    def after_step(self, t: Any) -> None:
        if not t.storage.step_ok:
            return
        d = self.rule.decay_at(self.updates)
        weights = t.model.state_dict()
        for name, s in self.shadow.state_dict().items():
            w = weights[name]
            if paddle.is_floating_point(s):
                s.set_value(s * d + w.astype(s.dtype) * (1.0 - d))
            else:
                s.set_value(w)
        self.updates += 1


def weight_averaging_from(block: Optional[Dict[str, Any]], where: str = "ema", *,
                          decay: Optional[float] = None) -> Optional[WeightAveraging]:
    """The averaging of a config's ``ema:`` block (``decay``), with ``--ema_decay`` over it.

    Args:
        block: the config's ``ema`` mapping, or None.
        where: the file the block comes from, for error messages.
        decay: the command-line value; None keeps the block's, 0 turns averaging off.

    Returns:
        The averaging, or None when it is off (no block and no ``decay``, or ``decay`` 0).

    Raises:
        ConfigError: an unknown key, or a decay outside (0, 1) (naming ``where``).
    """
    from ..cvlibs.errors import ConfigError

    values = dict(block or {})
    unknown = [k for k in values if k != "decay"]
    if unknown:
        raise ConfigError(f"Unknown key 'ema.{unknown[0]}' in {where}; valid keys: decay")
    if decay is not None:
        values["decay"] = decay
    if not values or values.get("decay") == 0:
        return None
    try:
        return WeightAveraging(**values)
    except ValueError as e:
        raise ConfigError(f"{e} (ema in {where}, or --ema_decay; 0 turns averaging off)") from None
