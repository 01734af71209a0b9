"""Optimizers, registered by the names PaddleSeg configs use.

Each factory takes the LR (a float or an LR scheduler) and the model's
parameters from the builder; the rest comes from the config.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import paddle

from ..cvlibs import manager


def _clip(grad_clip_norm: Optional[float]):
    return paddle.nn.ClipGradByGlobalNorm(grad_clip_norm) if grad_clip_norm else None


@manager.OPTIMIZERS.register(name="sgd")
def sgd(learning_rate: Any, parameters: Iterable, momentum: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False,
        grad_clip_norm: Optional[float] = None) -> paddle.optimizer.Optimizer:
    """SGD; with ``momentum`` > 0 it is Paddle's Momentum (PaddleSeg's meaning)."""
    if momentum:
        return paddle.optimizer.Momentum(
            learning_rate=learning_rate, momentum=momentum, parameters=parameters,
            weight_decay=weight_decay or None, use_nesterov=nesterov, grad_clip=_clip(grad_clip_norm))
    return paddle.optimizer.SGD(learning_rate=learning_rate, parameters=parameters,
                                weight_decay=weight_decay or None, grad_clip=_clip(grad_clip_norm))


@manager.OPTIMIZERS.register(name="Momentum")
def momentum(learning_rate: Any, parameters: Iterable, momentum: float = 0.9,
             weight_decay: float = 0.0, nesterov: bool = False,
             grad_clip_norm: Optional[float] = None) -> paddle.optimizer.Optimizer:
    """Momentum SGD."""
    return sgd(learning_rate, parameters, momentum, weight_decay, nesterov, grad_clip_norm)


def _adam_kind(name: str, cls: type, default_decay: float, coupled_decay: bool, doc: str):
    """The factory of one Adam variant: Adam adds the L2 decay to the gradient
    (``coupled_decay``; 0 means none), AdamW decays the weights directly."""

    def factory(learning_rate: Any, parameters: Iterable, beta1: float = 0.9,
                beta2: float = 0.999, epsilon: float = 1e-8, weight_decay: float = default_decay,
                grad_clip_norm: Optional[float] = None) -> paddle.optimizer.Optimizer:
        decay = (weight_decay or None) if coupled_decay else weight_decay
        return cls(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                   parameters=parameters, weight_decay=decay, grad_clip=_clip(grad_clip_norm))

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


adam = manager.OPTIMIZERS.register(
    _adam_kind("adam", paddle.optimizer.Adam, 0.0, True, "Adam with L2 weight decay."), name="Adam")
adamw = manager.OPTIMIZERS.register(
    _adam_kind("adamw", paddle.optimizer.AdamW, 0.01, False, "AdamW (decoupled weight decay)."),
    name="AdamW")


# Lower-case aliases as PaddleSeg accepts them.
manager.OPTIMIZERS.register(adam, name="adam")
manager.OPTIMIZERS.register(adamw, name="adamw")
manager.OPTIMIZERS.register(momentum, name="momentum")
manager.OPTIMIZERS.register(sgd, name="SGD")  # PaddleSeg 2.8's configs spell it so
