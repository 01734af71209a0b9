"""One set of argument rules for the config builder and the constructors.

For every registered model, head and backbone and every argument it declares a
rule for (:func:`paddleseg_ext.cvlibs.validators.validated`), the builder's
check (``SegBuilder.validate()`` for models and the backbones inside them, the
same ``ComponentBuilder.check`` for heads) and the constructor must accept
and refuse the same values, and refuse with the same message.
"""

import math
import textwrap

import paddle.nn as nn
import pytest

import paddleseg_ext.models  # noqa: F401  (registers the components)
from paddleseg_ext.cvlibs import ComponentBuilder, Config, ConfigError, SegBuilder, manager
from paddleseg_ext.cvlibs import validators as V

ROLES = (manager.MODELS, manager.HEADS, manager.BACKBONES)


class TinyBackbone(nn.Layer):
    """Stands in for a backbone: the models only read its declared outputs."""

    feat_channels = [8, 8, 8, 16]
    feat_strides = [4, 8, 16, 32]


#: The arguments a component needs besides the one under test (constructor side);
#: models get a built backbone here and ``{type: ResNet18_vd}`` in the config.
REQUIRED = {
    "PSPNet": {"num_classes": 3},
    "DANet": {"num_classes": 3},
    "PSANet": {"num_classes": 3},
    "PointRend": {"num_classes": 3},
    "DAHead": {"in_channels": 8, "num_classes": 3},
    "PointHead": {"in_channels": 8, "num_classes": 3},
}


def _examples(rule):
    """(good values, bad values) for a rule, from what it declares."""
    if hasattr(rule, "optional_of"):
        good, bad = _examples(rule.optional_of)
        return [None] + good, [b for b in bad if b is not None]
    if rule.kind == "bool":
        return [True, False], [0, 1, "true", None]
    if rule.kind == "int":
        low = rule.low  # the boundary itself is in test_rule_messages: some widths need more
        return [low + 3, 16], [True, low - 1, -1, low + 0.5, float(low), str(low + 1), None]
    if rule.kind == "list":
        good_items, bad_items = _examples(rule.item)
        item = getattr(rule.item, "low", good_items[0])  # all ones: any multi_grid length takes it
        return [[item], [item] * 2], \
            [[], [bad_items[0]], [good_items[0], bad_items[1]], good_items[0], "1", None]
    if rule.kind == "choice":
        first = rule.choices[0]
        return list(rule.choices), ["no-such-choice" if not isinstance(first, str) else 7,
                                    first + 1000 if isinstance(first, int) else "no-such-choice",
                                    True, None, [first]]
    if rule is V.DROPOUT:
        return [0.0, 0.5, 0], [1.0, -0.1, 1, True, "0.1", math.nan, None]
    if rule is V.FRACTION:
        return [0.0, 1.0, 0.25], [1.5, -0.1, True, "0.5", math.inf, None]
    if rule is V.POSITIVE_NUMBER:
        return [0.5, 2], [0, -1.0, True, "1", math.nan, None]
    if rule is V.NUMBER_AT_LEAST_ONE:
        return [1, 2.5], [0.5, 0, True, "3", math.inf, None]
    raise AssertionError(f"no examples for {rule!r}: add them here")


#: Good values for arguments whose length goes with another argument (checked in the
#: constructor body, like ``feature_indices``): ``stem_channels`` needs one width per stem
#: conv of the default ``stem='deep'`` (three); ``dilations`` one per stage (four).
GOOD = {("ResNet_vd", "stem_channels"): [[32, 32, 64], [64, 64, 128]],
        # one dilation per stage: mmseg's d8/d32 rule and an undilated ResNet
        ("ResNet_vd", "dilations"): [[1, 1, 2, 4], [1, 1, 1, 1]]}


def _cases():
    for reg in ROLES:
        for name in reg:
            owner, rules = V.rules_of(reg.get(name))
            for arg, rule in rules.items():
                good, bad = _examples(rule)
                if (owner, arg) in GOOD:
                    good = [None] * (None in good) + GOOD[owner, arg]
                for value in good:
                    yield pytest.param(reg, name, arg, value, True, id=f"{name}-{arg}-ok-{value!r}")
                for value in bad:
                    yield pytest.param(reg, name, arg, value, False, id=f"{name}-{arg}-bad-{value!r}")


def _construct(reg, name, arg, value):
    kwargs = dict(REQUIRED.get(name, {}))
    if reg is manager.MODELS:
        kwargs["backbone"] = TinyBackbone()
    kwargs[arg] = value
    return reg.get(name)(**kwargs)


def _builder_check(reg, name, arg, value, tmp_path):
    """The builder's verdict: None, or the message of its ConfigError."""
    cfg = dict(REQUIRED.get(name, {}), type=name)
    if reg is manager.HEADS:  # heads are built by models: check them as validate() checks components
        cfg[arg] = value
        where = "model.head"
        check = lambda: ComponentBuilder(lambda p: "cfg.yml").check(cfg, where, manager.HEADS)  # noqa: E731
    else:
        if reg is manager.MODELS:
            cfg["backbone"] = {"type": "ResNet18_vd"}
            cfg[arg] = value
        else:
            cfg = {"type": "PSPNet", "num_classes": 3, "backbone": {"type": name, arg: value}}
        path = tmp_path / "cfg.yml"
        path.write_text(textwrap.dedent(f"""
            iters: 1
            model: {_yaml(cfg)}
            """))
        check = lambda: SegBuilder(Config(str(path))).validate(parts=("model",))  # noqa: E731
    try:
        check()
    except ConfigError as e:
        return str(e)
    return None


def _yaml(value):
    """Flow-style YAML that reads back as ``value`` (json is YAML, except nan/inf)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, str):
        return repr(value)
    return repr(value)


YAML_HINT = " (YAML reads a number like 1e-4 without a dot as text: write 1.0e-4)"
_ACCEPTED = set()  # (owner, argument, value) a constructor accepted in this session


@pytest.mark.parametrize("reg, name, arg, value, ok", list(_cases()))
def test_builder_and_constructor_agree(reg, name, arg, value, ok, tmp_path):
    built_msg = _builder_check(reg, name, arg, value, tmp_path)
    owner = V.rules_of(reg.get(name))[0]
    if ok:
        assert built_msg is None, built_msg
        key = (owner, arg, repr(value))
        if key not in _ACCEPTED:  # ResNet50/101_vd run ResNet18_vd's constructor: build it once
            _construct(reg, name, arg, value)
            _ACCEPTED.add(key)
        return
    with pytest.raises(ValueError) as info:
        _construct(reg, name, arg, value)
    ctor_msg = str(info.value)
    assert ctor_msg.startswith(f"{owner}: {arg} must be "), ctor_msg
    assert ctor_msg.endswith(f", got {value!r}"), ctor_msg
    assert built_msg is not None, f"the builder accepted {arg}={value!r}; {name} refuses: {ctor_msg}"
    # The builder adds where the value came from, and for a number YAML read as text, how to write it.
    head, _, tail = built_msg.partition(f"): {ctor_msg}")
    assert head and tail in ("", YAML_HINT), (built_msg, ctor_msg)
    assert f".{arg} in " in built_msg  # names the key path


def test_every_model_head_and_backbone_declares_rules():
    """A new registered component must declare the rules of its arguments."""
    for reg in ROLES:
        for name in reg:
            owner, rules = V.rules_of(reg.get(name))
            assert rules, f"{name} ({reg.name}) declares no argument rules (@validated)"
            if reg is not manager.BACKBONES:
                assert name in REQUIRED, f"add {name}'s required arguments to REQUIRED"


@pytest.mark.parametrize("rule, value, message", [
    (V.POSITIVE_INT, True, "X: n must be a positive int, got True"),
    (V.POSITIVE_INT, 2.0, "X: n must be a positive int, got 2.0"),
    (V.NON_NEGATIVE_INT, -1, "X: n must be an int >= 0, got -1"),
    (V.BOOL, 1, "X: n must be True or False, got 1"),
    (V.DROPOUT, 1.0, r"X: n must be in [0, 1), got 1.0"),
    (V.DROPOUT, False, r"X: n must be in [0, 1), got False"),
    (V.FRACTION, 1.5, "X: n must be in [0, 1], got 1.5"),
    (V.optional(V.POSITIVE_NUMBER), 0, "X: n must be a positive number or None, got 0"),
    (V.one_of(8, 16, 32), True, "X: n must be one of 8, 16, 32, got True"),
    (V.one_of(8, 16, 32), 8.0, "X: n must be one of 8, 16, 32, got 8.0"),
    (V.one_of("a", "b"), "c", "X: n must be one of 'a', 'b', got 'c'"),
    (V.list_of(V.POSITIVE_INT), [1, 0], "X: n must be a non-empty list of positive ints, got [1, 0]"),
    (V.list_of(V.POSITIVE_INT), [], "X: n must be a non-empty list of positive ints, got []"),
])
def test_rule_messages(rule, value, message):
    with pytest.raises(ValueError) as info:
        rule("X", "n", value)
    assert str(info.value) == message


def test_rules_normalise():
    assert V.DROPOUT("X", "p", 0) == 0.0 and isinstance(V.DROPOUT("X", "p", 0), float)
    assert V.one_of("op", "paddle", normalise=str.lower)("X", "impl", "OP") == "op"
    assert V.one_of("collect", aliases={0: "collect"})("X", "t", 0) == "collect"
    assert V.list_of(V.POSITIVE_INT)("X", "bins", (1, 2)) == [1, 2]
    assert V.optional(V.DROPOUT)("X", "p", None) is None


def test_validated_names_the_class_and_passes_normalised_values():
    @V.validated(p=V.DROPOUT, flag=V.BOOL)
    class Layer:
        def __init__(self, p: float = 0.1, flag: bool = False):
            self.p, self.flag = p, flag

    class Sub(Layer):
        pass

    assert isinstance(Layer(p=0).p, float)
    with pytest.raises(ValueError, match=r"^Sub: flag must be True or False, got 1$"):
        Sub(flag=1)
    with pytest.raises(TypeError, match="unexpected keyword"):  # a wrong name is the call's error
        Layer(q=1)
    with pytest.raises(TypeError, match="rules for unknown arguments"):
        V.validated(nope=V.BOOL)(Layer)


def test_builder_flags_take_true_or_false_everywhere():
    """Components without declared rules get the same flag rule from their annotations."""
    import paddleseg_ext.transforms  # noqa: F401  (registers Resize)

    check = ComponentBuilder(lambda p: "cfg.yml").check
    check({"type": "Resize", "keep_ratio": True}, "t", manager.TRANSFORMS)
    with pytest.raises(ConfigError, match="'keep_ratio' must be true or false, got 1"):
        check({"type": "Resize", "keep_ratio": 1}, "t", manager.TRANSFORMS)
