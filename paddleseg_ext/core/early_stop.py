"""Early stopping: end a run when a validation metric stops improving.

The rule is Keras' ``EarlyStopping`` / PyTorch Lightning's (``monitor``,
``patience``, ``min_delta``): an evaluation *improves* when its metric beats
the best value seen so far by more than ``min_delta``; after ``patience``
evaluations in a row without an improvement the run stops, at that
evaluation, after its checkpoint. ``best_model`` (saved on every new best by
:class:`~paddleseg_ext.core.hooks.BestModelSaverHook`) is the model to use.

Resume after an early stop: the checkpoint records the stop. ``--resume_model``
of such a run trains nothing and says so, unless the rule no longer holds
with the new settings (a larger ``patience``: the run continues from the
stopped iteration, counting the evaluations already without improvement), or
early stopping is off (the run continues to ``iters``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..cvlibs.validators import POSITIVE_INT, Rule, one_of, validated
from .hooks_base import Hook

# Metrics an evaluation reports; "loss" (validation loss) is the one to minimise.
EARLY_STOP_METRICS = ("mIoU", "Acc", "Kappa", "mDice", "loss")

#: ``min_delta``: a finite number (not a bool) >= 0.
NON_NEGATIVE_NUMBER = Rule("a number >= 0", lambda v: not isinstance(v, bool) and isinstance(v, (int, float))
                           and math.isfinite(v) and v >= 0, float, kind="number")


@validated(patience=POSITIVE_INT, metric=one_of(*EARLY_STOP_METRICS), min_delta=NON_NEGATIVE_NUMBER)
@dataclass(frozen=True)
class EarlyStopping:
    """When to stop.

    Args:
        patience: evaluations in a row without an improvement before stopping (>= 1).
        metric: the validation metric watched: one of ``EARLY_STOP_METRICS``
            (``loss``: validation loss, lower is better; the others higher).
        min_delta: an evaluation improves only when it beats the best by more than this (>= 0).

    Raises:
        ValueError: a value outside those ranges (the rules of
            :mod:`paddleseg_ext.cvlibs.validators`, with their messages).
    """

    patience: int
    metric: str = "mIoU"
    min_delta: float = 0.0

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "loss"

    def improves(self, value: float, best: Optional[float]) -> bool:
        """Whether ``value`` beats ``best`` (None: nothing yet) by more than ``min_delta``."""
        if best is None:
            return True
        return (best - value if self.lower_is_better else value - best) > self.min_delta


class EarlyStopHook(Hook):
    """Applies an :class:`EarlyStopping` rule after each evaluation.

    Reads ``storage.latest_eval``; when the rule says stop, sets
    ``storage.early_stop`` to the reason and the trainer ends the run (saving
    that iteration's checkpoint with this hook's state in it).
    """

    name = "early_stop"

    def __init__(self, rule: EarlyStopping) -> None:
        self.rule = rule
        self.reset()

    def reset(self) -> None:
        self.best: Optional[float] = None
        self.best_iter = -1
        self.stale: List[int] = []  # iterations of the evaluations since the best, none improving
        self.stopped: Optional[str] = None

    # -- checkpointed state ----------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"metric": self.rule.metric, "best": self.best, "best_iter": self.best_iter,
                "stale": list(self.stale), "stopped": self.stopped}

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        self.reset()
        if not state or state.get("metric") != self.rule.metric:
            return
        self.best, self.best_iter = state.get("best"), int(state.get("best_iter", -1))
        self.stale = [int(i) for i in state.get("stale", [])]
        self.stopped = state.get("stopped")

    # -- events ----------------------------------------------------------------
    def before_train(self, t: Any) -> None:
        if self.stopped is None:
            return
        if len(self.stale) >= self.rule.patience:
            t.storage.early_stop = self.stopped
            t.log.warning("[TRAIN] this run stopped early at iter %d (%s): nothing to train. To train "
                          "on, give a patience above %d (--early_stop_patience) or turn early stopping "
                          "off (--early_stop_patience 0)", t.iter, self.stopped, len(self.stale))
        else:
            t.log.info("[TRAIN] this run stopped early at iter %d; with patience %d (%d evaluations "
                       "without improvement so far) it continues", t.iter, self.rule.patience,
                       len(self.stale))
            self.stopped = None

    def after_step(self, t: Any) -> None:
        s = t.storage
        if not s.evaluated_at(t.iter):
            return
        if self.rule.metric not in s.latest_eval:
            raise ValueError(f"early stopping watches '{self.rule.metric}', which the evaluation does not "
                             f"report (it reports {', '.join(k for k in EARLY_STOP_METRICS if k in s.latest_eval)})")
        value = float(s.latest_eval[self.rule.metric])
        if self.rule.improves(value, self.best):
            self.best, self.best_iter, self.stale = value, t.iter, []
            return
        self.stale.append(t.iter)
        if len(self.stale) < self.rule.patience or t.iter >= t.iters:
            return
        better = "decreased" if self.rule.lower_is_better else "increased"
        self.stopped = (f"val {self.rule.metric} has not {better} by more than {self.rule.min_delta:g} over "
                        f"its best {self.best:.4f} (iter {self.best_iter}) in {len(self.stale)} "
                        f"evaluations (iters {', '.join(map(str, self.stale))})")
        s.early_stop = self.stopped


EARLY_STOP_KEYS = ("patience", "metric", "min_delta")


def early_stopping_from(block: Optional[Dict[str, Any]], where: str = "early_stop", *,
                        patience: Optional[int] = None, metric: Optional[str] = None,
                        min_delta: Optional[float] = None) -> Optional[EarlyStopping]:
    """The rule of a config's ``early_stop:`` block with command-line values over it.

    Args:
        block: the config's ``early_stop`` mapping (``patience``, ``metric``, ``min_delta``), or None.
        where: the file the block comes from, for error messages.
        patience, metric, min_delta: command-line values; None keeps the block's. A patience of
            0 turns early stopping off.

    Returns:
        The rule, or None when early stopping is off (no block and no ``patience``, or patience 0).

    Raises:
        ConfigError: an unknown key, or a value out of range (naming ``where``).
    """
    from ..cvlibs.errors import ConfigError

    values = dict(block or {})
    unknown = [k for k in values if k not in EARLY_STOP_KEYS]
    if unknown:
        raise ConfigError(f"Unknown key 'early_stop.{unknown[0]}' in {where}; valid keys: "
                          f"{', '.join(EARLY_STOP_KEYS)}")
    for key, val in (("patience", patience), ("metric", metric), ("min_delta", min_delta)):
        if val is not None:
            values[key] = val
    if values.get("patience") in (None, 0):
        if values and values.get("patience") is None:
            raise ConfigError(f"early stopping ({where}) has {', '.join(sorted(values))} but no patience: "
                              "give early_stop.patience (or --early_stop_patience N), evaluations without "
                              "improvement before stopping; 0 turns early stopping off")
        return None
    try:
        return EarlyStopping(**values)
    except ValueError as e:
        raise ConfigError(f"{e} (early_stop in {where}, or the --early_stop_* flags)") from None
