"""Checks shared by the model tests."""

import numpy as np
import paddle

from paddleseg_ext.models.losses import CrossEntropyLoss


def sgd_losses(net: paddle.nn.Layer, h: int, w: int, steps: int = 6, aux_coef: float = 0.4) -> list:
    """Losses of ``steps`` Momentum steps on a fixed, learnable 3-class batch of 2 (main + aux outputs)."""
    net.train()
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 3, h, w)).astype("float32")
    label = np.zeros((2, h, w), dtype="int64")
    label[:, :, w // 2:] = 1
    label[:, h // 2:, :] = 2
    img[:, 0] += label  # make the task learnable from the pixels
    img, label = paddle.to_tensor(img), paddle.to_tensor(label)
    ce = CrossEntropyLoss()
    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=net.parameters())
    losses = []
    for _ in range(steps):
        out = net(img)
        loss = ce(out[0], label) + aux_coef * ce(out[1], label)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    return losses
