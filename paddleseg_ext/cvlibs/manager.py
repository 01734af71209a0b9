"""Component registries.

Every buildable component (model, backbone, loss, dataset, transform,
optimizer, LR schedule) registers itself in the registry of its role, and the
config builder turns ``{type: Name, ...}`` dicts into objects through them.

A failed lookup names the registry, the key and close matches; registering a
name twice is an error (PaddleSeg silently overwrites, which hides typos in
forks and plugins).
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, Iterator, List, Optional, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry:
    """A name -> class/function mapping for one role of component.

    Args:
        name: role name shown in error messages, e.g. ``"models"``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: Dict[str, Any] = {}

    def register(self, obj: Optional[T] = None, *, name: Optional[str] = None) -> Any:
        """Register ``obj`` under ``name`` (default: its ``__name__``).

        Usable as ``@REG.register``, ``@REG.register()`` or
        ``@REG.register(name="Alias")``, or called directly ``REG.register(f)``.
        """

        def _add(o: T) -> T:
            key = name or o.__name__
            if key in self._entries and self._entries[key] is not o:
                raise KeyError(
                    f"'{key}' is already registered in the {self.name} registry "
                    f"(by {_qualname(self._entries[key])}); pick another name")
            self._entries[key] = o
            return o

        if obj is None:
            return _add
        return _add(obj)

    def get(self, key: str, where: str = "") -> Any:
        """Return the component registered as ``key``.

        Raises:
            ConfigError: ``key`` is unknown; the message lists close matches.
        """
        if key in self:
            return self._entries[key]
        raise ConfigError(self.unknown_message(key, where))

    def unknown_message(self, key: str, where: str = "") -> str:
        close = self.close_matches(key)
        loc = f" (at {where})" if where else ""
        hint = (f" Did you mean: {', '.join(close)}?" if close else
                f" Known: {', '.join(sorted(self._entries)) or 'none'}.")
        return f"Unknown {self.name} type '{key}'{loc}.{hint}"

    def close_matches(self, key: str, n: int = 5) -> List[str]:
        keys = list(self._entries)
        by_lower = {k.lower(): k for k in keys}
        found = difflib.get_close_matches(str(key).lower(), list(by_lower), n=n, cutoff=0.5)
        return [by_lower[k] for k in found]

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._entries
        except TypeError:  # unhashable (a list / dict from a config where a name belongs)
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> List[str]:
        return list(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {sorted(self._entries)})"


def _qualname(o: Any) -> str:
    return f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', o)}"


MODELS = Registry("models")
BACKBONES = Registry("backbones")
HEADS = Registry("heads")
LOSSES = Registry("losses")
DATASETS = Registry("datasets")
TRANSFORMS = Registry("transforms")
OPTIMIZERS = Registry("optimizers")
LR_SCHEDULERS = Registry("lr_schedulers")

ALL_REGISTRIES = (MODELS, BACKBONES, HEADS, LOSSES, DATASETS, TRANSFORMS,
                  OPTIMIZERS, LR_SCHEDULERS)


def find_registry(key: str) -> Optional[Registry]:
    """The registry that holds ``key``, searched in role order, or None."""
    for reg in ALL_REGISTRIES:
        if key in reg:
            return reg
    return None


def unknown_anywhere(key: str, where: str = "") -> ConfigError:
    """Error for a nested ``type:`` found in no registry, with close matches
    gathered across all registries."""
    close: List[str] = []
    for reg in ALL_REGISTRIES:
        close += [f"{m} ({reg.name})" for m in reg.close_matches(key, 3)]
    loc = f" (at {where})" if where else ""
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"Unknown component type '{key}'{loc}.{hint}")

