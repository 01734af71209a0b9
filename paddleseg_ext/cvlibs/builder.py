"""Turns a :class:`Config` into objects: ``SegBuilder`` (PaddleSeg's API).

Only the builder reads config dicts; components receive typed keyword
arguments. Everything is checked once, before heavy objects are built:
unknown ``type:`` names (with close matches), unknown or missing constructor
arguments (with the file they came from), and the agreement of
``num_classes`` / ``ignore_index`` / ``img_channels`` between dataset, model
and loss, and of the model's output count with the loss count.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import manager, validators
from .config import Config, nearest_keys, short_repr
from .errors import ConfigError

logger = logging.getLogger("paddleseg_ext")


#: Keys of the model section that are execution choices, not model arguments: they set the
#: execution policy (:mod:`paddleseg_ext.runtime`) and the model never receives them.
POLICY_KEYS = ("psa_impl",)


def _all_params(fn: Callable) -> Optional[Dict[str, inspect.Parameter]]:
    """The parameters of a function or a class's constructor (without ``self``), or None."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        params = dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None
    params.pop("self", None)
    return params


def _signature_params(fn: Callable) -> Optional[Dict[str, inspect.Parameter]]:
    """:func:`_all_params`, or None where ``**kwargs`` makes argument names uncheckable."""
    params = _all_params(fn)
    if params is None or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return params


class ComponentBuilder:
    """Builds ``{type: Name, ...}`` dicts through the registries, recursively.

    Args:
        origin: ``key path -> file`` lookup for error messages.
    """

    def __init__(self, origin: Callable[[str], str] = lambda p: "<config>") -> None:
        self.origin = origin

    def _resolve(self, cfg: Any, where: str, registry: Optional[manager.Registry]):
        """``(name, class, other keys)`` of a ``{type: ...}`` dict, or a ConfigError."""
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"{where} in {self.origin(where)} must be a mapping with a 'type' key, "
                              f"got {short_repr(cfg)}")
        cfg = copy.deepcopy(cfg)
        name = cfg.pop("type")
        bad = [k for k in cfg if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{where} in {self.origin(where)}: argument names must be text, got {bad[0]!r}")
        if not isinstance(name, str):
            raise ConfigError(f"{where}.type in {self.origin(where + '.type')} must be a name, got {name!r}")
        if registry is not None:
            if name not in registry:
                raise ConfigError(registry.unknown_message(name, f"{where} in {self.origin(where)}"))
        else:
            registry = manager.find_registry(name)
            if registry is None:
                raise manager.unknown_anywhere(name, f"{where} in {self.origin(where)}")
        return name, registry.get(name), cfg

    def build(self, cfg: Dict[str, Any], where: str,
              registry: Optional[manager.Registry] = None, **extra: Any) -> Any:
        """Build the component ``cfg`` found at config key path ``where``.

        ``extra`` are arguments the builder supplies (e.g. ``parameters``);
        config values win over none of them.
        """
        name, cls, cfg = self._resolve(cfg, where, registry)
        self.check_types(cls, name, cfg, where)
        self.check_rules(cls, name, cfg, where)
        kwargs = {k: self.build_value(v, f"{where}.{k}") for k, v in cfg.items()}
        kwargs.update(extra)
        self.check_args(cls, name, kwargs, where)
        try:
            return cls(**kwargs)
        except ConfigError as e:
            if " (at " in str(e):  # a nested component already said where
                raise
            raise ConfigError(f"{name} (at {where} in {self.origin(where)}): {e}") from e
        except Exception as e:  # keep the original type, add the where
            msg = f"{name} (at {where} in {self.origin(where)}): {e}"
            # a wrong value type in the config; Paddle checks arguments with assert
            # (e.g. PolynomialDecay's power > 0): both are the config's mistake
            if isinstance(e, (TypeError, AssertionError)):
                raise ConfigError(msg) from e
            try:
                err = type(e)(msg)
            except Exception:
                err = ConfigError(msg)
            raise err.with_traceback(e.__traceback__) from e

    def check(self, cfg: Dict[str, Any], where: str, registry: Optional[manager.Registry] = None,
              supplied: Sequence[str] = ()) -> None:
        """Check ``cfg`` (and nested components) like :meth:`build` without building anything:
        known types, known / required argument names, simple value types.

        ``supplied``: argument names the builder fills in itself.
        """
        name, cls, cfg = self._resolve(cfg, where, registry)
        for k, v in cfg.items():
            self.check_value(v, f"{where}.{k}")
        self.check_types(cls, name, cfg, where)
        self.check_rules(cls, name, cfg, where)
        names = dict.fromkeys(list(cfg) + [s for s in supplied if s not in cfg])
        self.check_args(cls, name, names, where)

    def check_value(self, val: Any, where: str) -> None:
        if isinstance(val, dict) and "type" in val:
            self.check(val, where)
        elif isinstance(val, list):
            for i, v in enumerate(val):
                self.check_value(v, f"{where}.{i}")

    def build_value(self, val: Any, where: str) -> Any:
        if isinstance(val, dict) and "type" in val:
            return self.build(val, where)
        if isinstance(val, list):
            return [self.build_value(v, f"{where}.{i}") for i, v in enumerate(val)]
        return val

    def check_args(self, cls: Callable, name: str, kwargs: Dict[str, Any], where: str) -> None:
        params = _signature_params(cls)
        if params is None:
            return
        valid = [k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL,)]
        for key in kwargs:
            if key not in params:
                near = nearest_keys(key, valid)
                hint = f" Did you mean: {', '.join(near)}?" if near else ""
                raise ConfigError(
                    f"Unknown argument '{key}' for {name} (at {where}.{key} in "
                    f"{self.origin(where + '.' + key)}).{hint} Valid arguments: {', '.join(valid)}.")
        missing = [k for k, p in params.items()
                   if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and k not in kwargs]
        if missing:
            raise ConfigError(f"{name} (at {where} in {self.origin(where)}) is missing required "
                              f"argument(s): {', '.join(missing)}")


    def check_rules(self, cls: Callable, name: str, cfg: Dict[str, Any], where: str) -> None:
        """Config values against the rules the component declares for its arguments
        (:mod:`~paddleseg_ext.cvlibs.validators`): the constructor runs the same rules, so
        the builder refuses what the constructor would refuse, with its words."""
        owner, rules = validators.rules_of(cls)
        for key, val in cfg.items():
            rule = rules.get(key)
            if rule is None:
                continue
            try:
                rule(owner, key, val)
            except ValueError as e:
                hint = _yaml_number_hint(val) if rule.kind in ("int", "number") else ""
                raise ConfigError(f"{name} (at {where}.{key} in {self.origin(where + '.' + key)}): "
                                  f"{e}{hint}") from None

    def check_types(self, cls: Callable, name: str, cfg: Dict[str, Any], where: str) -> None:
        """Config values against simple annotations (int, float, bool, str, Optional/Sequence
        of those): ``iters: "abc"``-style mistakes get a message instead of a deep TypeError.
        Arguments with a declared rule are left to :meth:`check_rules`."""
        params = _all_params(cls)
        if params is None:
            return
        ruled = validators.rules_of(cls)[1]
        for key, val in cfg.items():
            p = params.get(key)
            if p is None or key in ruled or (isinstance(val, dict) and "type" in val):
                continue
            want = _simple_annotation(p.annotation)
            if want is None or _matches(val, want):
                continue
            hint = _yaml_number_hint(val) if want[0] in ("int", "float") else ""
            raise ConfigError(f"{name} (at {where}.{key} in {self.origin(where + '.' + key)}): "
                              f"'{key}' must be {_describe(want)}, got {short_repr(val)}{hint}")


def _yaml_number_hint(val: Any) -> str:
    """The hint for a number YAML read as text (``1e-4``: PyYAML wants a dot)."""
    if isinstance(val, str):
        try:
            float(val)
        except ValueError:
            return ""
        return " (YAML reads a number like 1e-4 without a dot as text: write 1.0e-4)"
    return ""


_SCALARS = {"int": "int", "float": "float", "bool": "bool", "str": "str"}


def _simple_annotation(ann: Any):
    """``('int'|'float'|'bool'|'str', optional, is_sequence)`` for simple annotations, else None."""
    if ann is inspect.Parameter.empty:
        return None
    text = ann if isinstance(ann, str) else (
        ann.__name__ if isinstance(ann, type) else str(ann))
    text = text.replace("typing.", "").replace(" ", "")
    optional = False
    if text.startswith("Optional[") and text.endswith("]"):
        text, optional = text[len("Optional["):-1], True
    elif text.endswith("|None"):
        text, optional = text[:-len("|None")], True
    elif text.startswith("None|"):
        text, optional = text[len("None|"):], True
    if text in _SCALARS:
        return _SCALARS[text], optional, False
    for seq in ("Sequence[", "List[", "list[", "Tuple[", "tuple["):
        if text.startswith(seq) and text.endswith("]"):
            inner = text[len(seq):-1]
            if inner.endswith(",..."):
                inner = inner[:-4]
            if inner in _SCALARS:
                return _SCALARS[inner], optional, True
    return None


def _scalar_ok(v: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "bool":  # 0/1 refused, as the declared rules refuse them (validators.BOOL)
        return validators.BOOL.test(v)
    return isinstance(v, str)


def _matches(val: Any, want) -> bool:
    kind, optional, seq = want
    if val is None:
        return optional
    if seq:
        return isinstance(val, (list, tuple)) and all(_scalar_ok(v, kind) for v in val)
    return _scalar_ok(val, kind)


def _describe(want) -> str:
    kind, optional, seq = want
    words = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string"}
    plural = {"int": "integers", "float": "numbers", "bool": "true/false values", "str": "strings"}
    text = f"a list of {plural[kind]}" if seq else words[kind]
    return text + (" (or null)" if optional else "")


def _accepts(cls: Any, arg: str) -> bool:
    params = _signature_params(cls)
    return params is None or arg in params


class SegBuilder:
    """Builds the parts of a training / evaluation run from a :class:`Config`.

    Parts are built lazily and cached, so ``val.py`` builds only the model and
    the val transforms. Settings shared between parts are synced here, once:
    the model's and losses' ``num_classes`` / ``ignore_index`` come from the
    dataset when unset and must agree when set.

    Args:
        config: the loaded config.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.components = ComponentBuilder(config.origin)

    # -- dataset-level facts -------------------------------------------------
    def _dataset_cfg(self) -> Optional[Dict[str, Any]]:
        return self.config.dic.get("train_dataset") or self.config.dic.get("val_dataset")

    def _dataset_value(self, key: str, default: Any = None) -> Any:
        for section in ("train_dataset", "val_dataset"):
            cfg = self.config.dic.get(section) or {}
            if key in cfg:
                return cfg[key]
        ds = self._dataset_cfg()
        if ds and "type" in ds and ds["type"] in manager.DATASETS:
            cls = manager.DATASETS.get(ds["type"])
            fixed = getattr(cls, "NUM_CLASSES", None) if key == "num_classes" else None
            if fixed:
                return fixed
        return default

    @functools.cached_property
    def num_classes(self) -> int:
        """``num_classes`` of the run, from the datasets or the model section."""
        train = (self.config.dic.get("train_dataset") or {}).get("num_classes")
        val = (self.config.dic.get("val_dataset") or {}).get("num_classes")
        if train is not None and val is not None and train != val:
            raise ConfigError(f"train_dataset.num_classes ({train}, {self.config.origin('train_dataset')}) "
                              f"!= val_dataset.num_classes ({val}, {self.config.origin('val_dataset')})")
        n = self._dataset_value("num_classes")
        model_n = (self.config.dic.get("model") or {}).get("num_classes")
        if n is None and model_n is None:
            raise ConfigError("num_classes is set nowhere: give it in train_dataset/val_dataset "
                              f"(or model) in {self.config.path}")
        if n is not None and model_n is not None and n != model_n:
            raise ConfigError(
                f"model.num_classes ({model_n}, {self.config.origin('model.num_classes')}) disagrees with "
                f"the dataset's num_classes ({n}); remove it from the model to take the dataset's")
        return int(n if n is not None else model_n)

    @functools.cached_property
    def ignore_index(self) -> int:
        return int(self._dataset_value("ignore_index", 255))

    @functools.cached_property
    def img_channels(self) -> int:
        return int(self._dataset_value("img_channels", 3))

    # -- model ---------------------------------------------------------------
    @functools.cached_property
    def model(self):
        cfg = copy.deepcopy(self.config.section("model"))
        for key in POLICY_KEYS:  # execution choices: the policy's, not the model's
            cfg.pop(key, None)
        model_type = cfg.get("type")
        if model_type not in manager.MODELS:
            raise ConfigError(manager.MODELS.unknown_message(
                str(model_type), f"model in {self.config.origin('model.type')}"))
        if "num_classes" not in cfg:
            cfg["num_classes"] = self.num_classes
            logger.debug("model.num_classes = %d (from the dataset)", self.num_classes)
        else:
            self.num_classes  # noqa: B018  (checks agreement)
        bb = cfg.get("backbone")
        if isinstance(bb, dict) and "type" in bb and self.img_channels != 3:
            bcls = manager.BACKBONES.get(bb["type"], "model.backbone") if bb["type"] in manager.BACKBONES else None
            if bcls is not None and _accepts(bcls, "in_channels"):
                if "in_channels" not in bb:
                    bb["in_channels"] = self.img_channels
                elif bb["in_channels"] != self.img_channels:
                    raise ConfigError(
                        f"model.backbone.in_channels ({bb['in_channels']}) != dataset img_channels "
                        f"({self.img_channels}) in {self.config.path}")
        return self.components.build(cfg, "model", manager.MODELS)

    @property
    def policy_overrides(self) -> Dict[str, Any]:
        """Execution choices the config makes (``model.psa_impl``), for the execution policy.

        Raises:
            ConfigError: a value the policy cannot take (names the key and its file).
        """
        from ..runtime import ExecutionPolicy

        section = self.config.dic.get("model") or {}
        found = {k: section[k] for k in POLICY_KEYS if k in section}
        try:
            ExecutionPolicy(**found)
        except ValueError as e:
            key = next(iter(found))
            raise ConfigError(f"model.{key} in {self.config.origin('model.' + key)}: "
                              f"{str(e).replace('execution policy: ', '')}") from None
        return found

    # -- loss ----------------------------------------------------------------
    @functools.cached_property
    def loss(self) -> Dict[str, Any]:
        """``{'types': [loss objects], 'coef': [floats]}``; one type is broadcast to len(coef)."""
        cfg = self.config.section("loss")
        where = self.config.origin("loss")
        extra = [k for k in cfg if k not in ("types", "coef")]
        if extra:
            near = nearest_keys(str(extra[0]), ["types", "coef"])
            hint = f" Did you mean: {', '.join(near)}?" if near else ""
            raise ConfigError(f"Unknown key 'loss.{extra[0]}' in {self.config.origin('loss.' + str(extra[0]))}."
                              f"{hint} loss takes 'types' (a list of {{type: ...}}) and 'coef' (one weight "
                              "per model output)")
        if "types" not in cfg or "coef" not in cfg:
            raise ConfigError(f"loss in {where} needs 'types' and 'coef', got keys {list(cfg)}")
        types, coef = cfg["types"], cfg["coef"]
        if not isinstance(types, list) or not isinstance(coef, list) or not types or not coef:
            raise ConfigError(f"loss.types and loss.coef in {where} must be non-empty lists")
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coef):
            raise ConfigError(f"loss.coef in {where} must be a list of numbers, got {coef!r}")
        if len(types) == 1 and len(coef) > 1:
            types = [copy.deepcopy(types[0]) for _ in coef]
        if len(types) != len(coef):
            raise ConfigError(f"loss in {where} has {len(types)} types but {len(coef)} coef")
        built = []
        for i, t in enumerate(types):
            t = copy.deepcopy(t)
            cls = manager.LOSSES.get(t.get("type"), f"loss.types.{i}") if isinstance(t, dict) else None
            if cls is not None and _accepts(cls, "ignore_index"):
                if "ignore_index" not in t:
                    t["ignore_index"] = self.ignore_index
                elif t["ignore_index"] != self.ignore_index and self._dataset_cfg() is not None:
                    raise ConfigError(
                        f"loss.types.{i}.ignore_index ({t['ignore_index']}) != the dataset's ignore_index "
                        f"({self.ignore_index}) in {where}")
            weight = t.get("weight") if isinstance(t, dict) else None
            if isinstance(weight, list) and self._num_classes_or_none() not in (None, len(weight)):
                raise ConfigError(
                    f"loss.types.{i}.weight in {self.config.origin(f'loss.types.{i}.weight')} has "
                    f"{len(weight)} class weights but num_classes is {self.num_classes}: give one per class")
            built.append(self.components.build(t, f"loss.types.{i}", manager.LOSSES))
        return {"types": built, "coef": [float(c) for c in coef]}

    def _num_classes_or_none(self) -> Optional[int]:
        try:
            return self.num_classes
        except ConfigError:
            return None

    def validate(self, parts: Sequence[str] = ("train_dataset", "val_dataset", "model", "loss",
                                               "lr_scheduler", "optimizer")) -> None:
        """Check the whole config before anything heavy is built.

        Checks every ``{type: ...}`` name and argument name recursively (model,
        backbone, datasets, transforms, optimizer) without building the model,
        optimizer or datasets; builds the cheap parts (loss, LR schedule,
        transforms) so their value checks run too; checks that ``num_classes``
        and ``ignore_index`` agree. Raises :class:`ConfigError` (or the
        ``ValueError`` of a transform / loss constructor, with its config key).
        """
        dic = {k: v for k, v in self.config.dic.items() if k in parts}
        for key in ("train_dataset", "val_dataset"):
            ds = dic.get(key)
            if ds is None:
                continue
            self.components.check(ds, key, manager.DATASETS)
            tfs = ds.get("transforms")
            if tfs is not None:
                where = f"{key}.transforms"
                if not isinstance(tfs, list):
                    raise ConfigError(f"{where} in {self.config.origin(where)} must be a list of "
                                      f"{{type: ...}} entries, got {tfs!r}")
                for i, t in enumerate(tfs):
                    if not isinstance(t, dict) or "type" not in t:
                        raise ConfigError(f"{where}.{i} in {self.config.origin(f'{where}.{i}')} must be a "
                                          f"mapping with a 'type' key, got {t!r}")
                self.components.build_value(tfs, where)
        if dic.get("model") is not None:
            self.policy_overrides  # noqa: B018  (checks the execution choices)
            cfg = {k: v for k, v in self.config.section("model").items() if k not in POLICY_KEYS}
            if cfg.get("type") not in manager.MODELS:
                raise ConfigError(manager.MODELS.unknown_message(
                    str(cfg.get("type")), f"model in {self.config.origin('model.type')}"))
            self.components.check(cfg, "model", manager.MODELS, supplied=("num_classes",))
            self.num_classes  # noqa: B018  (checks agreement)
        if dic.get("loss") is not None:
            self.loss  # noqa: B018
        if dic.get("lr_scheduler") is not None:
            self.lr_scheduler  # noqa: B018
        if dic.get("optimizer") is not None:
            self.components.check(self._typed_section("optimizer"), "optimizer", manager.OPTIMIZERS,
                                  supplied=("learning_rate", "parameters"))

    def check_outputs_match_losses(self, model=None) -> None:
        """Error at build time if the model's training outputs != loss count."""
        model = model or self.model
        names = _training_output_names(model)
        n_loss = len(self.loss["types"])
        if names is not None and len(names) != n_loss:
            raise ConfigError(
                f"{type(model).__name__} returns {len(names)} logits in training {tuple(names)} but "
                f"loss has {n_loss} types/coef in {self.config.origin('loss')}: give one coef per output")

    # -- optimisation --------------------------------------------------------
    def _typed_section(self, key: str) -> Dict[str, Any]:
        """A copy of the ``{type: ...}`` section ``key``; a ConfigError if it has no type."""
        cfg = copy.deepcopy(self.config.section(key))
        if "type" not in cfg:
            raise ConfigError(f"{key} in {self.config.origin(key)} needs a 'type'")
        return cfg

    @functools.cached_property
    def lr_scheduler(self):
        return self.components.build(self._typed_section("lr_scheduler"), "lr_scheduler",
                                     manager.LR_SCHEDULERS, total_iters=self.config.iters)

    @functools.cached_property
    def optimizer(self):
        return self.components.build(self._typed_section("optimizer"), "optimizer",
                                     manager.OPTIMIZERS, learning_rate=self.lr_scheduler,
                                     parameters=self.model.parameters())

    # -- data ----------------------------------------------------------------
    def _dataset(self, key: str):
        cfg = self.config.section(key, required=False)
        if cfg is None:
            return None
        return self.components.build(cfg, key, manager.DATASETS)

    @functools.cached_property
    def train_dataset(self):
        ds = self._dataset("train_dataset")
        if ds is not None and len(ds) == 0:
            raise ConfigError(f"train_dataset from {self.config.origin('train_dataset')} is empty")
        return ds

    @functools.cached_property
    def val_dataset(self):
        return self._dataset("val_dataset")

    @functools.cached_property
    def val_transforms(self) -> List[Any]:
        """The val dataset's transforms, built without reading any data."""
        cfg = self.config.dic.get("val_dataset") or {}
        if "transforms" not in cfg:
            raise ConfigError(f"val_dataset.transforms is missing from {self.config.path}")
        return self.components.build_value(cfg["transforms"], "val_dataset.transforms")


def _training_output_names(model) -> Optional[List[str]]:
    if not hasattr(model, "output_names"):
        return None
    was_training = model.training
    model.train()
    try:
        return list(model.output_names)
    finally:
        if not was_training:
            model.eval()
