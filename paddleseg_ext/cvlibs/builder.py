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
from typing import Any, Callable, Dict, List, Optional

from . import manager
from .config import Config, nearest_keys
from .errors import ConfigError

logger = logging.getLogger("paddleseg_ext")


def _signature_params(fn: Callable) -> Optional[Dict[str, inspect.Parameter]]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        params = dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None
    params.pop("self", None)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None  # **kwargs: cannot check names
    return params


class ComponentBuilder:
    """Builds ``{type: Name, ...}`` dicts through the registries, recursively.

    Args:
        origin: ``key path -> file`` lookup for error messages.
    """

    def __init__(self, origin: Callable[[str], str] = lambda p: "<config>") -> None:
        self.origin = origin

    def build(self, cfg: Dict[str, Any], where: str,
              registry: Optional[manager.Registry] = None, **extra: Any) -> Any:
        """Build the component ``cfg`` found at config key path ``where``.

        ``extra`` are arguments the builder supplies (e.g. ``parameters``);
        config values win over none of them.
        """
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"{where} in {self.origin(where)} must be a mapping with a 'type' key, "
                              f"got {cfg!r}")
        cfg = copy.deepcopy(cfg)
        name = cfg.pop("type")
        if registry is not None:
            if name not in registry:
                raise ConfigError(registry.unknown_message(name, f"{where} in {self.origin(where)}"))
        else:
            registry = manager.find_registry(name)
            if registry is None:
                raise manager.unknown_anywhere(name, f"{where} in {self.origin(where)}")
        cls = registry.get(name)
        kwargs = {k: self.build_value(v, f"{where}.{k}") for k, v in cfg.items()}
        kwargs.update(extra)
        self.check_args(cls, name, kwargs, where)
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except Exception as e:  # keep the original type, add the where
            msg = f"{name} (at {where} in {self.origin(where)}): {e}"
            try:
                err = type(e)(msg)
            except Exception:
                err = ConfigError(msg)
            raise err.with_traceback(e.__traceback__) from e

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

    # -- loss ----------------------------------------------------------------
    @functools.cached_property
    def loss(self) -> Dict[str, Any]:
        """``{'types': [loss objects], 'coef': [floats]}``; one type is broadcast to len(coef)."""
        cfg = self.config.section("loss")
        where = self.config.origin("loss")
        if "types" not in cfg or "coef" not in cfg:
            raise ConfigError(f"loss in {where} needs 'types' and 'coef', got keys {list(cfg)}")
        types, coef = cfg["types"], cfg["coef"]
        if not isinstance(types, list) or not isinstance(coef, list) or not types or not coef:
            raise ConfigError(f"loss.types and loss.coef in {where} must be non-empty lists")
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
            built.append(self.components.build(t, f"loss.types.{i}", manager.LOSSES))
        return {"types": built, "coef": [float(c) for c in coef]}

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
    @functools.cached_property
    def lr_scheduler(self):
        cfg = copy.deepcopy(self.config.section("lr_scheduler"))
        if "type" not in cfg:
            raise ConfigError(f"lr_scheduler in {self.config.origin('lr_scheduler')} needs a 'type'")
        return self.components.build(cfg, "lr_scheduler", manager.LR_SCHEDULERS,
                                     total_iters=self.config.iters)

    @functools.cached_property
    def optimizer(self):
        cfg = copy.deepcopy(self.config.section("optimizer"))
        if "type" not in cfg:
            raise ConfigError(f"optimizer in {self.config.origin('optimizer')} needs a 'type'")
        return self.components.build(cfg, "optimizer", manager.OPTIMIZERS,
                                     learning_rate=self.lr_scheduler,
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
