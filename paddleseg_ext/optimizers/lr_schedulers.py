"""Learning-rate schedules by name, with optional linear warm-up.

``decay_steps`` / ``T_max`` default to the run's ``iters`` (minus warm-up),
which the builder passes as ``total_iters``: configs need not repeat it.
"""

from __future__ import annotations

from typing import List, Optional


from paddle.optimizer import lr as plr

from ..cvlibs import manager


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


