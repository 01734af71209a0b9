"""Argument rules shared by the config builder and the component constructors.

A rule is a callable ``rule(owner, name, value) -> value`` that returns the
value (normalised: ``' OP '`` -> ``'op'``, ``0`` -> ``0.0`` for a
probability) or raises ``ValueError("<owner>: <name> must be <allowed>, got
<value>")``. A component declares the rules of its scalar arguments once, with
:func:`validated`; its constructor then runs them before its body, and
:class:`~paddleseg_ext.cvlibs.builder.ComponentBuilder` runs the same rules on
the config values before anything is built (``SegBuilder.validate()``), so a
value the builder accepts is a value the constructor accepts, and both refuse
with the same words.

Rules that need another argument or a built object (``backbone_indices``
against ``backbone.feat_channels``) stay in the constructor body; the shared
one is :func:`feature_indices`.

Two choices every rule makes the same way:

* a flag is ``True`` or ``False`` only. ``0``/``1`` are refused: PyYAML reads
  ``true``/``false``/``yes``/``no`` as bools already, and several integer
  arguments take ``0``/``1`` as codes (``align_mode``, ``psa_type``), so a
  number where a flag belongs is more likely a misplaced key than a flag;
* a number is never a bool (``True`` is not the int 1 here), and an integer
  argument takes a Python ``int`` only (``2.0`` is refused: a YAML ``2.0``
  where a count belongs is a typo worth reporting).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, TypeVar

__all__ = ["Rule", "validated", "rules_of", "copy_rules", "one_of", "int_at_least", "optional", "list_of",
           "POSITIVE_INT", "NON_NEGATIVE_INT", "BOOL", "DROPOUT", "FRACTION",
           "POSITIVE_NUMBER", "NUMBER_AT_LEAST_ONE", "feature_indices"]

T = TypeVar("T")

_RULES_ATTR = "__argument_rules__"
_OWNER_ATTR = "__argument_owner__"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


class Rule:
    """One argument rule: a test, the words for what it allows, a normaliser.

    Args:
        allowed: completes "``<name>`` must be ..." (``"a positive int"``).
        test: True for an allowed value.
        convert: maps an allowed value to the one the constructor receives.
        plural: the allowed words for a list of such values
            (``"positive ints"``), used by :func:`list_of`.
        kind: a short tag that says which family the rule belongs to
            (``"int"``, ``"bool"``, ``"number"``, ``"choice"``, ``"list"``),
            so tests can pick example values for every rule.
    """

    def __init__(self, allowed: str, test: Callable[[Any], bool],
                 convert: Optional[Callable[[Any], Any]] = None, plural: str = "",
                 kind: str = "") -> None:
        self.allowed = allowed
        self.test = test
        self.convert = convert
        self.plural = plural or f"values that are {allowed}"
        self.kind = kind

    def __call__(self, owner: str, name: str, value: Any) -> Any:
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError, AttributeError):  # e.g. a list compared with a number
            ok = False
        if not ok:
            raise ValueError(f"{owner}: {name} must be {self.allowed}, got {value!r}")
        return self.convert(value) if self.convert is not None else value

    def __repr__(self) -> str:
        return f"Rule({self.allowed!r})"


def int_at_least(low: int, words: str = "", plural: str = "") -> Rule:
    """An ``int`` (not a bool) ``>= low``."""
    rule = Rule(words or f"an int >= {low}", lambda v: _is_int(v) and v >= low,
                plural=plural or f"ints >= {low}", kind="int")
    rule.low = low  # type: ignore[attr-defined]
    return rule


POSITIVE_INT = int_at_least(1, "a positive int", "positive ints")
NON_NEGATIVE_INT = int_at_least(0)
BOOL = Rule("True or False", lambda v: isinstance(v, bool), kind="bool")
#: A dropout probability: 1 would drop everything.
DROPOUT = Rule("in [0, 1)", lambda v: _is_number(v) and 0.0 <= v < 1.0, float, kind="number")
FRACTION = Rule("in [0, 1]", lambda v: _is_number(v) and 0.0 <= v <= 1.0, float, kind="number")
POSITIVE_NUMBER = Rule("a positive number", lambda v: _is_number(v) and v > 0, float,
                       kind="number")
NUMBER_AT_LEAST_ONE = Rule(">= 1", lambda v: _is_number(v) and v >= 1, float, kind="number")


def one_of(*choices: Any, aliases: Optional[Mapping[Any, Any]] = None,
           normalise: Optional[Callable[[str], str]] = None, words: str = "") -> Rule:
    """A rule that allows ``choices`` (matched by type and value: ``True`` is not 1).

    Args:
        choices: the allowed values; the constructor receives the value itself.
        aliases: more accepted values and what each stands for (PaddleSeg's
            integer codes, e.g. ``{0: 'collect'}`` or the reverse).
        normalise: applied to a text value before matching (``str.lower``).
        words: the allowed words, when the default ``one of a, b`` says too little.
    """
    table: Dict[Tuple[type, Any], Any] = {(type(c), c): c for c in choices}
    for alias, meaning in (aliases or {}).items():
        table[(type(alias), alias)] = meaning

    def key(v: Any) -> Tuple[type, Any]:
        if normalise is not None and isinstance(v, str):
            v = normalise(v)
        return type(v), v

    def test(v: Any) -> bool:
        return key(v) in table

    rule = Rule(words or "one of " + ", ".join(map(repr, choices)), test,
                lambda v: table[key(v)], kind="choice")
    rule.choices = tuple(choices)  # type: ignore[attr-defined]
    return rule


def optional(rule: Rule) -> Rule:
    """``rule`` or None (None passes through unchanged)."""
    inner = Rule(f"{rule.allowed} or None", lambda v: v is None or rule.test(v),
                 lambda v: v if v is None or rule.convert is None else rule.convert(v),
                 kind=rule.kind)
    inner.optional_of = rule  # type: ignore[attr-defined]
    return inner


def list_of(rule: Rule) -> Rule:
    """A non-empty list (or tuple) whose every item passes ``rule``; gives a list."""
    def test(v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) > 0 and all(rule.test(x) for x in v)

    out = Rule(f"a non-empty list of {rule.plural}", test,
               lambda v: [x if rule.convert is None else rule.convert(x) for x in v],
               kind="list")
    out.item = rule  # type: ignore[attr-defined]
    return out


def validated(**rules: Rule) -> Callable[[T], T]:
    """Class decorator: run ``rules`` on the named constructor arguments.

    The wrapped ``__init__`` checks (and normalises) every rule-bearing
    argument the caller passed, then runs the original body with the
    normalised values; defaults are trusted. Error messages name the class
    being built (``type(self).__name__``, so a subclass is named as itself).
    The rules are stored on the class for :func:`rules_of`.

    Raises:
        TypeError: at class definition, a rule names no argument of ``__init__``.
    """
    def decorate(cls: T) -> T:
        init = cls.__init__  # type: ignore[misc]
        sig = inspect.signature(init)
        unknown = [n for n in rules if n not in sig.parameters]
        if unknown:
            raise TypeError(f"{cls.__name__}: rules for unknown arguments {unknown}")  # type: ignore[attr-defined]

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                bound = sig.bind(self, *args, **kwargs)
            except TypeError:  # wrong arguments: the original call says which
                return init(self, *args, **kwargs)
            owner = type(self).__name__
            for name in list(bound.arguments):
                rule = rules.get(name)
                if rule is not None:
                    bound.arguments[name] = rule(owner, name, bound.arguments[name])
            init(*bound.args, **bound.kwargs)

        cls.__init__ = __init__  # type: ignore[misc]
        setattr(cls, _RULES_ATTR, MappingProxyType(dict(rules)))
        return cls

    return decorate


def copy_rules(factory: Callable[..., Any], cls: type) -> None:
    """Let a factory of ``cls`` (a registered one-line variant) carry ``cls``'s
    rules for the arguments it takes (its ``__signature__`` must be set first),
    so the builder checks them as the class will."""
    params = inspect.signature(factory).parameters
    rules = getattr(cls, _RULES_ATTR, {})
    setattr(factory, _RULES_ATTR, MappingProxyType({k: r for k, r in rules.items() if k in params}))
    setattr(factory, _OWNER_ATTR, cls.__name__)


def rules_of(component: Any) -> Tuple[str, Mapping[str, Rule]]:
    """``(owner, {argument: rule})`` declared for a registered class or factory
    (``{}`` when none): the owner is the name the constructor's errors use."""
    owner = getattr(component, _OWNER_ATTR, None) or getattr(component, "__name__", str(component))
    return owner, getattr(component, _RULES_ATTR, MappingProxyType({}))


# --------------------------------------------------------------------------
# Checks that need a built object or several arguments (constructor bodies)
# --------------------------------------------------------------------------

def feature_indices(owner: str, backbone: Any, value: Any, count: Optional[int] = 2,
                    meaning: str = "", needs: Sequence[str] = ("feat_channels",)) -> Tuple[int, ...]:
    """Check a model's ``backbone`` and ``backbone_indices`` together; returns the indices.

    ``backbone`` must be a built layer exposing ``needs``; the indices are
    ints in ``[0, len(backbone.feat_channels))``: ``count`` of them, or
    (``count=None``) at least two, increasing (fine to coarse).

    Args:
        meaning: what the indices select, for the message (``"(aux feature,
            PPM feature)"``).
    """
    import paddle.nn as nn  # the config side of this module does not need Paddle

    if not isinstance(backbone, nn.Layer) or not all(hasattr(backbone, a) for a in needs):
        attrs = " and ".join(f"`{a}`" for a in needs)
        raise ValueError(f"{owner}: backbone must be a built backbone layer with {attrs}, "
                         f"got {type(backbone).__name__}")
    n_feats = len(backbone.feat_channels)
    idx = tuple(value) if isinstance(value, (list, tuple)) else ()
    in_range = all(_is_int(i) and 0 <= i < n_feats for i in idx)
    if count is not None:
        ok = len(idx) == count and in_range
        what = f"{'two' if count == 2 else count} ints"
    else:
        ok = len(idx) >= 2 and in_range and list(idx) == sorted(set(idx))
        what = "at least two increasing ints"
    if not ok:
        tail = f" {meaning}" if meaning else ""
        raise ValueError(f"{owner}: backbone_indices must be {what} in [0, {n_feats}){tail}, "
                         f"got {value!r}")
    return idx
