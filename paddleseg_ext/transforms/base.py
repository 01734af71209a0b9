"""Shared base class and argument checks for transforms.

Data-dict contract (one sample)::

    {'img': HxWxC float32 (or a path before Compose reads it),
     'label': HxW int map (optional),
     'gt_fields': ['label', ...],   # keys transformed like labels (nearest)
     'trans_info': [('resize', (h, w)), ('padding', (h, w)), ...],
     'img_path': str, 'label_path': str}

A transform changes ``img`` and every key named in ``gt_fields``; keys not in
``gt_fields`` (e.g. the label in val mode) are left untouched.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Dict, Sequence, Tuple, Union

import numpy as np

Size = Union[int, Sequence[int]]


def apply_to_sample(data: Dict[str, Any], img_fn: Callable[[np.ndarray], np.ndarray],
                    gt_fn: Callable[[np.ndarray], np.ndarray]) -> Dict[str, Any]:
    """Apply ``img_fn`` to ``data['img']`` and ``gt_fn`` to each ``gt_fields`` key."""
    data["img"] = img_fn(data["img"])
    for key in data.get("gt_fields", ()):
        if data.get(key) is not None:
            data[key] = gt_fn(data[key])
    return data


class Transform:
    """Base class: ``__call__(data) -> data`` plus helpers and a readable repr."""

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    _apply = staticmethod(apply_to_sample)

    def __repr__(self) -> str:
        params = []
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self" and hasattr(self, name):
                params.append(f"{name}={getattr(self, name)!r}")
        return f"{type(self).__name__}({', '.join(params)})"


def _where(data: Dict[str, Any]) -> str:
    path = data.get("img_path")
    return f" (image {path})" if isinstance(path, str) else ""


def check_size(value: Size, name: str, owner: str) -> Tuple[int, int]:
    """``int`` or ``(width, height)`` of positive ints -> ``(w, h)``.

    Raises:
        ValueError: anything else; the message names owner, arg and value.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                    for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(
        f"{owner}: {name} must be a positive int or a [width, height] pair of positive "
        f"ints, got {value!r}")


def check_prob(value: float, name: str, owner: str) -> float:
    """A probability in [0, 1]."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{owner}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_number(value: float, name: str, owner: str, low: float = 0.0,
                 low_inclusive: bool = True) -> float:
    """A real number ``>= low`` (or ``> low``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        value >= low if low_inclusive else value > low)
    if not ok:
        rel = ">=" if low_inclusive else ">"
        raise ValueError(f"{owner}: {name} must be a number {rel} {low}, got {value!r}")
    return float(value)


def check_pad_value(value: Any, name: str, owner: str) -> Any:
    """A number or a non-empty list of numbers (one per channel)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)):
        return [float(v) for v in value]
    raise ValueError(f"{owner}: {name} must be a number or a list of numbers (one per "
                     f"channel), got {value!r}")


def check_padding(im_padding_value: Any, label_padding_value: Any, owner: str) -> Tuple[Any, int]:
    """The image fill (:func:`check_pad_value`) and the label fill (an int) of a
    transform that pads."""
    return (check_pad_value(im_padding_value, "im_padding_value", owner),
            int(check_number(label_padding_value, "label_padding_value", owner, -2 ** 31)))
