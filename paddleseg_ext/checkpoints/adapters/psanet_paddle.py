"""PSANet_paddle checkpoints -> this toolkit's :class:`~paddleseg_ext.models.PSANet`.

PSANet_paddle (https://github.com/justld/PSANet_paddle, ``paddleseg/models/psanet.py``)
is the PaddlePaddle reproduction of PSANet (Zhao et al., ECCV 2018) whose
ResNet50_vd Cityscapes model reports 79.94 mIoU (the peer's figure). Its
network is ours with three sub-layers named differently and, in bi-direction
mode, the two branch contexts concatenated ``[distribute, collect]``:

=============================  ======================
PSANet_paddle                  paddleseg_ext
=============================  ======================
``psa.reduce_layer.*``         ``psa.reduce.*``
``head.conv_bn_relu.*``        ``bottleneck.*``
``head.conv.*``                ``cls.*``
everything else                the same key
=============================  ======================

Every conv before a BatchNorm is built with ``bias_attr=False`` there, as
here, so the conversion is renames only. The concat order is a property of
the network, not of the file: a bi-direction checkpoint needs a model built
with ``psa_concat_order: distribute_first`` (the Cityscapes R50 recipe
``configs/psanet/psanet_resnet50_os8_cityscapes_1024x512_80k.yml`` is), and
is refused otherwise rather than silently giving other logits.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .base import Conversion, register_adapter

__all__ = ["LAYOUT", "RENAMES", "detect", "convert"]

LAYOUT = "PSANet_paddle PSANet"
#: (peer prefix, our prefix), applied to the first matching key prefix.
RENAMES: Tuple[Tuple[str, str], ...] = (
    ("psa.reduce_layer.", "psa.reduce."),
    ("head.conv_bn_relu.", "bottleneck."),
    ("head.conv.", "cls."),
)
# Keys only PSANet_paddle's head has (PaddleSeg's AuxLayer as the main head).
_SIGNATURE = ("head.conv_bn_relu._conv.weight", "head.conv.weight")
_SHOWN = 8  # mismatches listed in an error message


def _is_psanet(model: object) -> bool:
    from paddleseg_ext.models.psanet import PSANet  # late: models import the loader

    return isinstance(model, PSANet)


def _rename(key: str) -> str:
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _array(value: object) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def detect(keys: Sequence[str], model: object) -> bool:
    """True for a PSANet_paddle state dict loaded into our PSANet.

    Args:
        keys: the checkpoint's key names.
        model: the model the checkpoint is loaded into.
    """
    names = set(keys)
    return _is_psanet(model) and all(k in names for k in _SIGNATURE)


def _expected_shapes(model: object) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(int(d) for d in v.shape) for k, v in model.state_dict().items()}


def _shape_error(mismatched: List[Tuple[str, str, tuple, tuple]]) -> ValueError:
    lines = [f"  {peer} {list(got)} -> {ours} expects {list(want)}"
             for peer, ours, got, want in mismatched[:_SHOWN]]
    if len(mismatched) > _SHOWN:
        lines.append(f"  ... and {len(mismatched) - _SHOWN} more")
    hint = ""
    for peer, ours, got, want in mismatched:
        if ours == "cls.weight":
            hint = (f" The checkpoint has {got[0]} classes, the model num_classes={want[0]}.")
            break
    return ValueError(f"{LAYOUT} checkpoint does not fit this PSANet: {len(mismatched)} "
                      f"tensor(s) have another shape (a different backbone, num_classes, mask "
                      f"size or psa_type?).{hint}\n" + "\n".join(lines))


def convert(state: Mapping[str, object], model: object) -> Conversion:
    """Rename a PSANet_paddle state dict into ``model``'s layout.

    Args:
        state: the peer's state dict (NumPy arrays or Paddle tensors).
        model: the target :class:`~paddleseg_ext.models.PSANet`.

    Returns:
        The conversion; keys with no place in ``model`` are listed in
        ``unplaced`` (the loader refuses the file then).

    Raises:
        ValueError: a tensor whose renamed key exists in ``model`` with
            another shape (the message lists them and names ``num_classes``
            when the classifier differs), or a bi-direction checkpoint for a
            model not built with ``psa_concat_order: distribute_first``.
    """
    want = _expected_shapes(model)
    out: Dict[str, np.ndarray] = {}
    unplaced: List[str] = []
    mismatched: List[Tuple[str, str, tuple, tuple]] = []
    renamed = 0
    for key, value in state.items():
        new = _rename(key)
        if new not in want:
            unplaced.append(key)
            continue
        array = _array(value)
        if tuple(array.shape) != want[new]:
            mismatched.append((key, new, tuple(array.shape), want[new]))
            continue
        out[new] = array
        renamed += new != key
    if mismatched:
        raise _shape_error(mismatched)
    psa = getattr(model, "psa", None)
    bidirectional = any(k.startswith("psa.reduce_p.") for k in state)
    if (bidirectional and psa is not None and psa.psa_type == 2
            and psa.concat_order != "distribute_first"):
        raise ValueError(
            f"{LAYOUT} checkpoint: its bi-direction PSA module concatenates the branch "
            f"contexts [distribute, collect]; this PSANet was built with psa_concat_order="
            f"{psa.concat_order!r}, which would give other logits with the same tensors. "
            f"Build the model with `psa_concat_order: distribute_first` (as "
            f"configs/psanet/psanet_resnet50_os8_cityscapes_1024x512_80k.yml does).")
    return Conversion(layout=LAYOUT, state=out, renamed=renamed, unplaced=unplaced)


register_adapter("psanet_paddle.psanet", detect, convert)
