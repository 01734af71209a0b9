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


def randomise_batch_norms(net: paddle.nn.Layer, seed: int = 0, scales: bool = False) -> paddle.nn.Layer:
    """Non-trivial BN running statistics and affine parameters (at init a BN is ~identity).

    With ``scales``, also set the attention scales (DANet's ``gamma``, zero at init) to 0.5, so
    no form of a layer hides behind an identity.
    """
    rng = np.random.default_rng(seed)
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            c = layer._mean.shape[0]
            layer._mean.set_value(rng.normal(0, 0.5, c).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, c).astype("float32"))
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.bias.set_value(rng.normal(0, 0.2, c).astype("float32"))
        for name in ("gamma", "beta") if scales else ():
            p = getattr(layer, name, None)
            if isinstance(p, paddle.Tensor) and not p.stop_gradient and p.shape == [1]:
                p.set_value(paddle.to_tensor([0.5]))
    return net
