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


@manager.OPTIMIZERS.register(name="Adam")
def adam(learning_rate: Any, parameters: Iterable, beta1: float = 0.9, beta2: float = 0.999,
         epsilon: float = 1e-8, weight_decay: float = 0.0,
         grad_clip_norm: Optional[float] = None) -> paddle.optimizer.Optimizer:
    """Adam with L2 weight decay."""
    return paddle.optimizer.Adam(learning_rate=learning_rate, beta1=beta1, beta2=beta2,
                                 epsilon=epsilon, parameters=parameters,
                                 weight_decay=weight_decay or None, grad_clip=_clip(grad_clip_norm))


@manager.OPTIMIZERS.register(name="AdamW")
def adamw(learning_rate: Any, parameters: Iterable, beta1: float = 0.9, beta2: float = 0.999,
          epsilon: float = 1e-8, weight_decay: float = 0.01,
          grad_clip_norm: Optional[float] = None) -> paddle.optimizer.Optimizer:
    """AdamW (decoupled weight decay)."""
    return paddle.optimizer.AdamW(learning_rate=learning_rate, beta1=beta1, beta2=beta2,
                                  epsilon=epsilon, parameters=parameters,
                                  weight_decay=weight_decay, grad_clip=_clip(grad_clip_norm))


# Lower-case aliases as PaddleSeg accepts them.
manager.OPTIMIZERS.register(adam, name="adam")
manager.OPTIMIZERS.register(adamw, name="adamw")
manager.OPTIMIZERS.register(momentum, name="momentum")
