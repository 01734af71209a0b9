"""Input checks shared by the segmentation losses."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import paddle


def prepare(logit: paddle.Tensor, label: paddle.Tensor, ignore_index: int, loss_name: str,
            data_format: str = "NCHW") -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Validate a (logit, label) pair and return ``(logit_nchw, label, valid)``.

    Args:
        logit: ``[N, C, H, W]`` (or ``[N, H, W, C]`` for NHWC).
        label: ``[N, H, W]`` or ``[N, 1, H, W]`` integer class ids.
        ignore_index: label value excluded from the loss.
        loss_name: used in error messages.
        data_format: layout of ``logit``.

    Returns:
        NCHW logit, int64 label ``[N, H, W]`` with ignored pixels set to 0
        (safe for gathering), and the bool mask ``valid`` ``[N, H, W]``.

    Raises:
        ValueError: shapes disagree, or a label is outside ``[0, C)`` and not
            ``ignore_index``. Paddle's own kernels would otherwise crash deep
            inside ("Target 254 is out of upper bound") or read garbage.
    """
    if logit.ndim != 4:
        raise ValueError(
            f"{loss_name}: logit must be 4-D [N, C, H, W], got shape {list(logit.shape)}")
    if data_format == "NHWC":
        logit = logit.transpose([0, 3, 1, 2])
    if label.ndim == 4 and label.shape[1] == 1:
        label = label.squeeze(1)
    n, c, h, w = logit.shape
    if list(label.shape) != [n, h, w]:
        raise ValueError(f"{loss_name}: label shape {list(label.shape)} does not match logit "
                         f"shape {list(logit.shape)}; expected [{n}, {h}, {w}]")
    if label.dtype not in (paddle.int64, paddle.int32, paddle.int16, paddle.uint8):
        raise ValueError(f"{loss_name}: label must be an integer tensor, got {label.dtype}")
    label = label.astype("int64")
    valid = label != ignore_index
    bad = paddle.logical_and(valid, paddle.logical_or(label < 0, label >= c))
    if bool(bad.any()):  # one host sync; the rare bad path does the expensive part
        values = np.unique(label.numpy()[bad.numpy()])
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        raise ValueError(f"{loss_name}: label values [{shown}] are outside [0, {c}) for "
                         f"{c} classes and are not ignore_index={ignore_index}; fix the "
                         "dataset's num_classes/ignore_index or its label mapping")
    label = paddle.where(valid, label, paddle.zeros_like(label))
    return logit, label, valid


def pixel_nll(logit: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
    """Per-pixel ``-log softmax(logit)[label]``; logit ``[N,C,H,W]``, label ``[N,H,W]``.

    ``label`` must hold valid class ids only (``prepare`` maps ignored pixels
    to 0 and returns the mask). Computed by Paddle's fused softmax cross
    entropy on the channels-last view: its CPU kernel is fast along the last
    axis only, and log_softmax on axis 1 plus a gather took 5x as long
    (2x19x512x512, forward and backward; see benchmarks/models_vs_peer.py).
    """
    nll = paddle.nn.functional.cross_entropy(logit.transpose([0, 2, 3, 1]), label.unsqueeze(-1),
                                             reduction="none", axis=-1)
    return nll.squeeze(-1)


def class_weights(weight, num_classes: int, loss_name: str) -> paddle.Tensor:
    """``weight`` as a float32 tensor of length ``num_classes`` (checked)."""
    if len(weight) != num_classes:
        raise ValueError(f"{loss_name}: weight has {len(weight)} entries but the logit has "
                         f"{num_classes} classes")
    return paddle.to_tensor(weight, dtype="float32")


def check_weight(weight, loss_name: str):
    """Validate a user class-weight list at construction; returns a list or None."""
    if weight is None:
        return None
    if not isinstance(weight, (list, tuple)) or not weight:
        raise ValueError(f"{loss_name}: weight must be a non-empty list of floats, got {weight!r}")
    values = [float(v) for v in weight]
    if any(v < 0 for v in values):
        raise ValueError(f"{loss_name}: weight entries must be >= 0, got {weight!r}")
    return values
