"""Learning-rate schedules by name, with optional linear warm-up.

``decay_steps`` / ``T_max`` default to the run's ``iters`` (minus warm-up),
which the builder passes as ``total_iters``: configs need not repeat it.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from paddle.optimizer import lr as plr

from ..cvlibs import manager
from ..cvlibs.validators import (FRACTION, NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_NUMBER,
                                 list_of, validated)


def _warmup(sched, learning_rate: float, warmup_iters: int, warmup_start_lr: float):
    if not warmup_iters:
        return sched
    return plr.LinearWarmup(learning_rate=sched, warmup_steps=warmup_iters,
                            start_lr=warmup_start_lr, end_lr=learning_rate)


def _check(learning_rate: float, warmup_iters: int) -> None:
    if not learning_rate or learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")


@manager.LR_SCHEDULERS.register
def PolynomialDecay(learning_rate: float, total_iters: int, decay_steps: Optional[int] = None,
                    end_lr: float = 0.0, power: float = 0.9, cycle: bool = False,
                    warmup_iters: int = 0, warmup_start_lr: float = 0.0) -> plr.LRScheduler:
    """``lr = (lr0 - end_lr) * (1 - it / decay_steps) ** power + end_lr`` ("poly")."""
    _check(learning_rate, warmup_iters)
    steps = decay_steps or max(1, total_iters - warmup_iters)
    sched = plr.PolynomialDecay(learning_rate=learning_rate, decay_steps=steps, end_lr=end_lr,
                                power=power, cycle=cycle)
    return _warmup(sched, learning_rate, warmup_iters, warmup_start_lr)


@manager.LR_SCHEDULERS.register
def CosineAnnealingDecay(learning_rate: float, total_iters: int, T_max: Optional[int] = None,
                         eta_min: float = 0.0, warmup_iters: int = 0,
                         warmup_start_lr: float = 0.0) -> plr.LRScheduler:
    """Cosine annealing from ``learning_rate`` to ``eta_min`` over ``T_max`` iterations."""
    _check(learning_rate, warmup_iters)
    sched = plr.CosineAnnealingDecay(learning_rate=learning_rate,
                                     T_max=T_max or max(1, total_iters - warmup_iters),
                                     eta_min=eta_min)
    return _warmup(sched, learning_rate, warmup_iters, warmup_start_lr)


manager.LR_SCHEDULERS.register(CosineAnnealingDecay, name="CosineAnnealing")


@manager.LR_SCHEDULERS.register
def PiecewiseDecay(learning_rate: float, total_iters: int, boundaries: List[int] = (),
                   values: Optional[List[float]] = None, warmup_iters: int = 0,
                   warmup_start_lr: float = 0.0) -> plr.LRScheduler:
    """Step schedule; ``values`` default to ``learning_rate * 0.1 ** k``."""
    _check(learning_rate, warmup_iters)
    boundaries = list(boundaries)
    if values is None:
        values = [learning_rate * 0.1 ** k for k in range(len(boundaries) + 1)]
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"PiecewiseDecay needs len(values) == len(boundaries) + 1, got "
                         f"{len(values)} values for {len(boundaries)} boundaries")
    sched = plr.PiecewiseDecay(boundaries=boundaries, values=list(values))
    return _warmup(sched, learning_rate, warmup_iters, warmup_start_lr)


@manager.LR_SCHEDULERS.register
def ConstantLR(learning_rate: float, total_iters: int, warmup_iters: int = 0,
               warmup_start_lr: float = 0.0):
    """A constant LR (after optional warm-up)."""
    _check(learning_rate, warmup_iters)
    if warmup_iters:
        return _warmup(learning_rate, learning_rate, warmup_iters, warmup_start_lr)
    return plr.LambdaDecay(learning_rate=learning_rate, lr_lambda=lambda it: 1.0)




@manager.LR_SCHEDULERS.register
@validated(learning_rate=POSITIVE_NUMBER, milestones=list_of(POSITIVE_INT), gamma=POSITIVE_NUMBER,
           warmup_iters=NON_NEGATIVE_INT, warmup_start_factor=FRACTION)
class MultiStepDecay(plr.LRScheduler):
    """Linear warm-up, then the LR times ``gamma`` at each milestone (a step schedule).

    mmengine's ``LinearLR(start_factor, begin=0, end=warmup_iters)`` followed by
    ``MultiStepLR(milestones, gamma, begin=warmup_iters)``, the schedule of
    mmsegmentation's ResNet-strikes-back recipes (``pspnet_r50-d8-rsb_4xb2-adamw-80k_...``:
    factor 0.001 -> 1 over 1000 iterations, then x0.1 at 60k and 72k); the step
    schedule of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016
    (https://arxiv.org/abs/1512.03385). At iteration ``t`` (from 0) the LR is
    ``learning_rate`` times

    * ``s + (1 - s) * t / (warmup_iters - 1)`` for ``t < warmup_iters``
      (``s = warmup_start_factor``; mmengine's ``LinearLR`` reaches 1 on the last
      warm-up iteration, not after it),
    * else ``gamma ** k``, ``k`` the number of milestones ``m`` with
      ``t - warmup_iters >= m``: milestones count from the end of the warm-up, as
      mmengine counts them from a scheduler's ``begin``.

    Args:
        learning_rate: the base LR.
        total_iters: the run's iterations (the builder passes ``iters``); a milestone
            at or past ``total_iters - warmup_iters`` would never be reached and is refused.
        milestones: increasing iteration counts after the warm-up.
        gamma: the factor applied at each milestone.
        warmup_iters: length of the linear warm-up (0: none).
        warmup_start_factor: the LR factor at iteration 0 of the warm-up.
        last_epoch: the iteration to resume from (-1: start).
    """

    def __init__(self, learning_rate: float, total_iters: int, milestones: Sequence[int],
                 gamma: float = 0.1, warmup_iters: int = 0, warmup_start_factor: float = 0.001,
                 last_epoch: int = -1) -> None:
        marks = list(milestones)
        if any(b <= a for a, b in zip(marks, marks[1:])):
            raise ValueError(f"MultiStepDecay: milestones must increase, got {marks}")
        if total_iters and marks[-1] >= total_iters - warmup_iters:
            raise ValueError(f"MultiStepDecay: milestone {marks[-1]} (counted after the "
                             f"{warmup_iters} warm-up iterations) is never reached in "
                             f"{total_iters} iterations; milestones must be below "
                             f"{total_iters - warmup_iters}")
        self.milestones = marks
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_start_factor = warmup_start_factor
        super().__init__(learning_rate=learning_rate, last_epoch=last_epoch)

    def get_lr(self) -> float:
        t = self.last_epoch
        if t < self.warmup_iters:
            s = self.warmup_start_factor
            return self.base_lr * (s + (1.0 - s) * t / max(1, self.warmup_iters - 1))
        passed = sum(t - self.warmup_iters >= m for m in self.milestones)
        return self.base_lr * self.gamma ** passed


manager.LR_SCHEDULERS.register(MultiStepDecay, name="MultiStepLR")  # mmengine's name
