"""Inference-time BatchNorm folding: each ``bn(conv(x))`` pair becomes one conv with a bias.

In eval mode a batch norm is a per-channel affine map of its input,
``y = gamma * (z - mean) / sqrt(var + eps) + beta``; when ``z`` is a
convolution's output the map folds into the convolution (Ioffe & Szegedy,
"Batch Normalization", ICML 2015, https://arxiv.org/abs/1502.03167, Sec. 3.2,
used in inference engines since): with ``s = gamma / sqrt(var + eps)``,

    W' = W * s  (per output channel)          b' = beta + (b - mean) * s

so the network computes the same function with one pass over the feature map
less per batch norm. The fold is done in float64 and rounded once to the
weights' dtype, so the folded network agrees with the original within float
rounding.

Which conv feeds which batch norm directly (nothing in between) is declared
by the block that owns both, as a class attribute ``conv_bn_pairs`` of
``(conv attribute, batch-norm attribute)`` names (:class:`ConvBN`, the
EfficientNet-Lite blocks). Folding never guesses from the layer order.

:func:`fold_batch_norms` works on a deep copy: the model passed in (its
parameters, running statistics, train/eval mode and the checkpoints it
saves) is untouched, and the copy is for inference only. The ``fold_bn``
rewrite (:func:`paddleseg_ext.runtime.prepare`, target ``infer``) applies
:func:`fold_batch_norms_` to the copy it prepares.
"""

from __future__ import annotations

import copy
from typing import Iterator, List, Tuple

import numpy as np
import paddle
import paddle.nn as nn

#: Batch-norm layer types folding understands (eval-mode running statistics).
_BN_TYPES: Tuple[type, ...] = (nn.BatchNorm2D, nn.SyncBatchNorm, nn.BatchNorm)


def _pairs(model: nn.Layer) -> Iterator[Tuple[nn.Layer, str, str]]:
    """``(owner, conv name, bn name)`` for every declared pair still holding a batch norm."""
    for layer in model.sublayers(include_self=True):
        for conv_name, bn_name in getattr(type(layer), "conv_bn_pairs", ()):
            conv, bn = getattr(layer, conv_name, None), getattr(layer, bn_name, None)
            if isinstance(conv, nn.Conv2D) and isinstance(bn, _BN_TYPES):
                yield layer, conv_name, bn_name


def _fold_pair(conv: nn.Conv2D, bn: nn.Layer) -> None:
    """Fold ``bn`` (its running statistics) into ``conv`` in place; adds a bias if absent."""
    if getattr(conv, "_data_format", "NCHW") != "NCHW" or getattr(bn, "_data_format", "NCHW") not in (
            "NCHW", "NC"):
        raise ValueError("fold_batch_norms supports NCHW convolutions and batch norms only")
    dtype = conv.weight.dtype
    f64 = np.float64
    weight_np = conv.weight.numpy()
    np_dtype = weight_np.dtype
    weight = weight_np.astype(f64)
    gamma = bn.weight.numpy().astype(f64) if bn.weight is not None else np.ones(weight.shape[0])
    beta = bn.bias.numpy().astype(f64) if bn.bias is not None else np.zeros(weight.shape[0])
    mean, var = bn._mean.numpy().astype(f64), bn._variance.numpy().astype(f64)
    scale = gamma / np.sqrt(var + float(bn._epsilon))
    bias = conv.bias.numpy().astype(f64) if conv.bias is not None else np.zeros_like(mean)
    conv.weight.set_value((weight * scale[:, None, None, None]).astype(np_dtype))
    new_bias = (beta + (bias - mean) * scale).astype(np_dtype)
    if conv.bias is None:
        conv.bias = conv.create_parameter([weight.shape[0]], dtype=dtype, is_bias=True)
    conv.bias.set_value(new_bias)


def fold_batch_norms_(model: nn.Layer) -> Tuple[int, List[str]]:
    """Fold every declared ``bn(conv(x))`` pair of ``model`` in place (``model`` in eval mode).

    Returns:
        ``(number folded, names of batch norms left as they were)``; every parameter gets
        ``stop_gradient`` (the result is for inference only).
    """
    model.eval()
    n = 0
    with paddle.no_grad():
        for owner, conv_name, bn_name in list(_pairs(model)):
            _fold_pair(getattr(owner, conv_name), getattr(owner, bn_name))
            setattr(owner, bn_name, nn.Identity())
            n += 1
    for p in model.parameters():
        p.stop_gradient = True
    left: List[str] = [name for name, layer in model.named_sublayers()
                       if isinstance(layer, _BN_TYPES)]
    return n, left


def fold_batch_norms(model: nn.Layer) -> nn.Layer:
    """An eval-mode copy of ``model`` with every declared ``bn(conv(x))`` pair folded into the conv.

    Args:
        model: any model; its blocks declare their pairs in ``conv_bn_pairs``.

    Returns:
        A deep copy in eval mode, for inference only (``stop_gradient`` on all
        parameters): its batch norms are replaced by ``nn.Identity``. The
        original model is not modified. ``copy.folded_batch_norms`` holds the
        number folded and ``copy.unfolded_batch_norms`` the names of batch
        norms left as they were (not declared as directly after a conv).
    """
    folded = copy.deepcopy(model)
    folded.folded_batch_norms, folded.unfolded_batch_norms = fold_batch_norms_(folded)
    return folded
