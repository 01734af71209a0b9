"""YAML config loading: ``_base_`` inheritance, ``--opts`` overrides, origins.

The format is PaddleSeg's (``batch_size, iters, train_dataset, val_dataset,
optimizer, lr_scheduler, loss: {types, coef}, model, test_config``), so its
users' configs load unchanged. Every key remembers the file it came from, so
an error about a value deep in a ``_base_`` chain names that file.
"""

from __future__ import annotations

import copy
import difflib
import logging
import numbers
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from .errors import ConfigError

logger = logging.getLogger("paddleseg_ext")

BASE_KEY = "_base_"
INHERIT_KEY = "_inherited_"

# Top-level keys the toolkit understands. Anything else is a typo (or a key
# from a newer PaddleSeg we do not support) and gets a close-match error.
TOP_LEVEL_KEYS = (
    "batch_size", "iters", "train_dataset", "val_dataset", "test_dataset",
    "optimizer", "lr_scheduler", "loss", "model", "test_config",
    "export", "distill_loss", "to_static_training", "num_classes", "early_stop", "ema",
)
# Top-level keys whose value must be a mapping (or null).
MAPPING_KEYS = ("train_dataset", "val_dataset", "test_dataset", "optimizer", "lr_scheduler",
                "loss", "model", "test_config", "export", "distill_loss", "early_stop", "ema")
# test_config keys the tools use, and PaddleSeg ones that are accepted but unused.
TEST_CONFIG_KEYS = ("aug_eval", "scales", "flip_horizontal", "flip_vertical", "is_slide",
                    "crop_size", "stride", "align_corners", "nodata")
TEST_CONFIG_IGNORED = ("auc_roc", "use_multilabel", "print_detail", "precision", "amp_level",
                       "num_workers")


class _Loader(yaml.SafeLoader):
    """SafeLoader that warns about duplicate keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: Dict[Any, int] = {}
    for key_node, _ in node.value:
        try:
            key = loader.construct_object(key_node, deep=True)
            hash(key)
        except Exception:
            continue
        if key in seen:
            logger.warning("Duplicate key '%s' in %s at line %d (first at line %d): the last one wins",
                           key, getattr(loader, "name", "<yaml>"), key_node.start_mark.line + 1, seen[key])
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str) -> Dict[str, Any]:
    """Read one YAML file into a dict, with errors that name the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: syntax error (with line and column), empty file, or a
            top level that is not a mapping.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"Config file {path} is not UTF-8 text (byte {e.start}: "
                          f"{e.reason}); save it as UTF-8") from None
    try:
        loader = _Loader(text)
        loader.name = path
        try:
            dic = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        context = f" ({e.context})" if getattr(e, "context", None) else ""
        raise ConfigError(f"YAML syntax error in {path} at {where}: {e.problem}{context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML error in {path}: {e}") from None
    if dic is None:
        raise ConfigError(f"Config file {path} is empty")
    if not isinstance(dic, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping at the top level, got {type(dic).__name__}")
    return dic


def merge_dicts(base: Dict[str, Any], child: Dict[str, Any],
                keep_markers: bool = False) -> Dict[str, Any]:
    """Recursively merge ``child`` into a copy of ``base``; the child wins.

    Dicts merge key by key; lists and scalars are replaced whole; a child dict
    holding ``_inherited_: false`` replaces the base dict instead of merging.
    ``keep_markers`` keeps those markers in the result (``load_with_bases`` needs them:
    a base file's ``_inherited_: false`` must also replace what the bases listed before
    it set), otherwise they are dropped.
    """
    out = copy.deepcopy(base)
    for key, val in child.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict) and val.get(INHERIT_KEY, True) is not False:
            out[key] = merge_dicts(out[key], val, keep_markers)
        else:
            out[key] = copy.deepcopy(val)
    return out if keep_markers else strip_markers(out)


def strip_markers(dic: Any) -> Any:
    """``dic`` without ``_inherited_`` keys at any depth."""
    if isinstance(dic, dict):
        return {k: strip_markers(v) for k, v in dic.items() if k != INHERIT_KEY}
    if isinstance(dic, list):
        return [strip_markers(v) for v in dic]
    return dic


def _leaf_paths(dic: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(dic, dict):
        for k, v in dic.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            yield p
            yield from _leaf_paths(v, p)
    elif isinstance(dic, list):
        for i, v in enumerate(dic):
            p = f"{prefix}.{i}"
            yield from _leaf_paths(v, p)


def load_with_bases(path: str, _stack: Tuple[str, ...] = ()) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Load ``path`` and its ``_base_`` chain.

    Returns:
        The merged dict (still holding its ``_inherited_`` markers: ``strip_markers``)
        and a map ``key path -> file`` telling which file set each key last
        (``model.backbone.type -> configs/x.yml``).
    """
    path = os.path.abspath(path)
    if path in _stack:
        chain = " -> ".join(list(_stack[_stack.index(path):]) + [path])
        raise ConfigError(f"_base_ cycle: {chain}")
    dic = load_yaml(path)
    bases = dic.pop(BASE_KEY, None)
    merged: Dict[str, Any] = {}
    origins: Dict[str, str] = {}
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
        for b in bases:
            bpath = os.path.join(os.path.dirname(path), b)
            if not os.path.isfile(bpath):
                raise FileNotFoundError(
                    f"Base config '{b}' named in {path} not found (looked for {os.path.normpath(bpath)})")
            bdic, borig = load_with_bases(bpath, _stack + (path,))
            merged = merge_dicts(merged, bdic, keep_markers=True)
            origins.update(borig)
    merged = merge_dicts(merged, dic, keep_markers=True)
    for p in _leaf_paths(dic):
        origins[p] = path
    return merged, origins


def short_repr(val: Any, limit: int = 120) -> str:
    """``repr(val)``, cut to ``limit`` characters for error messages."""
    text = repr(val)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def parse_literal(text: str) -> Any:
    """Parse an ``--opts`` value the way YAML would (numbers, lists, bools)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def nearest_keys(key: str, candidates: Sequence[str]) -> List[str]:
    return difflib.get_close_matches(key, list(candidates), n=5, cutoff=0.4)


def apply_opts(dic: Dict[str, Any], opts: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key.sub=value`` overrides (list items by index: ``a.0.b=1``).

    Every intermediate key must exist. A new final key is allowed only inside
    a component (a dict with ``type``), where it is a constructor argument the
    builder will check; elsewhere a missing key is an error naming the
    nearest keys.
    """
    dic = copy.deepcopy(dic)
    for opt in opts or []:
        if "=" not in opt:
            raise ConfigError(f"--opts item '{opt}' must look like key.sub=value")
        key, value = opt.split("=", 1)
        parts = key.strip().split(".")
        node: Any = dic
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = ".".join(parts[:depth]) or "<top level>"
            if isinstance(node, list):
                if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                    raise ConfigError(
                        f"--opts {key}: '{part}' is not a valid index into the list at {here} "
                        f"(length {len(node)})")
                idx = int(part)
                if last:
                    node[idx] = parse_literal(value)
                else:
                    node = node[idx]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--opts {key}: {here} is a value, not a mapping")
            if part not in node:
                if last and (("type" in node) or depth == 0):
                    node[part] = parse_literal(value)
                    break
                near = nearest_keys(part, [str(k) for k in node])
                hint = f" Nearest keys: {', '.join(near)}." if near else \
                    f" Keys there: {', '.join(map(str, node)) or 'none'}."
                raise ConfigError(f"--opts {key}: no key '{part}' under {here}.{hint}")
            if last:
                node[part] = parse_literal(value)
            else:
                node = node[part]
    return dic


class Config:
    """A loaded, merged config.

    Args:
        path: YAML file. ``_base_`` paths are relative to the file that names them.
        learning_rate: overrides ``lr_scheduler.learning_rate``.
        batch_size: overrides ``batch_size``.
        iters: overrides ``iters``.
        opts: ``["key.sub=value", ...]`` overrides, applied last.

    Attributes:
        dic: the merged dict.
        origins: ``key path -> file`` that set it.
    """

    def __init__(self, path: str, learning_rate: Optional[float] = None,
                 batch_size: Optional[int] = None, iters: Optional[int] = None,
                 opts: Optional[Sequence[str]] = None) -> None:
        self.path = path
        dic, self.origins = load_with_bases(path)
        dic = strip_markers(dic)
        if opts:
            dic = apply_opts(dic, opts)
            for o in opts:
                self.origins[o.split("=", 1)[0].strip()] = "--opts"
        if batch_size is not None:
            dic["batch_size"] = batch_size
        if iters is not None:
            dic["iters"] = iters
        if learning_rate is not None:
            dic.setdefault("lr_scheduler", {})
            dic["lr_scheduler"]["learning_rate"] = learning_rate
        self.dic = dic
        self._check_top_level()

    def origin(self, key_path: str) -> str:
        """The file that set ``key_path`` (or its nearest set ancestor)."""
        parts = key_path.split(".")
        while parts:
            p = ".".join(parts)
            if p in self.origins:
                return self.origins[p]
            parts.pop()
        return self.path

    def _check_top_level(self) -> None:
        for key in self.dic:
            if key not in TOP_LEVEL_KEYS:
                near = nearest_keys(str(key), TOP_LEVEL_KEYS)
                hint = f" Did you mean: {', '.join(near)}?" if near else \
                    f" Allowed: {', '.join(TOP_LEVEL_KEYS)}."
                raise ConfigError(f"Unknown top-level key '{key}' in {self.origin(str(key))}.{hint}")
        for key in ("batch_size", "iters", "num_classes"):
            if key in self.dic:
                val = self.dic[key]
                if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                    raise ConfigError(
                        f"'{key}' in {self.origin(key)} must be a positive integer, got {short_repr(val)}")
        for key in MAPPING_KEYS:
            val = self.dic.get(key)
            if val is not None and not isinstance(val, dict):
                raise ConfigError(f"'{key}' in {self.origin(key)} must be a mapping (key: value "
                                  f"lines), got {type(val).__name__} {short_repr(val)}")
        for key in ("train_dataset", "val_dataset", "test_dataset", "model"):
            val = self.dic.get(key)
            if isinstance(val, dict) and val and "type" not in val:
                raise ConfigError(f"'{key}' in {self.origin(key)} has no 'type' (keys given: "
                                  f"{', '.join(map(str, val))}); a _base_ file that sets the type "
                                  "may be missing")
        self._check_test_config()

    def _check_test_config(self) -> None:
        """``test_config``: known keys, ``nodata``, and the inference options (:class:`InferOptions`)."""
        tc = self.dic.get("test_config")
        if not tc:
            return
        where = self.origin("test_config")
        for key in tc:
            if key in TEST_CONFIG_IGNORED:
                logger.warning("test_config.%s (%s) is a PaddleSeg setting this toolkit does not use; "
                               "ignored", key, where)
            elif key not in TEST_CONFIG_KEYS:
                near = nearest_keys(str(key), TEST_CONFIG_KEYS)
                hint = f" Did you mean: {', '.join(near)}?" if near else ""
                raise ConfigError(f"Unknown key 'test_config.{key}' in {self.origin('test_config.' + str(key))}."
                                  f"{hint} Valid keys: {', '.join(TEST_CONFIG_KEYS)}.")
        if "nodata" in tc and tc["nodata"] is not None and (
                isinstance(tc["nodata"], bool) or not isinstance(tc["nodata"], numbers.Real)):
            raise ConfigError(f"test_config.nodata in {where} must be a number (the value every band "
                              f"holds where there is no data), got {tc['nodata']!r}")
        from ..utils.infer_options import InferOptions  # it imports this package

        InferOptions.from_config(tc, where)  # the inference keys' rules and messages

    # PaddleSeg-style accessors.
    @property
    def batch_size(self) -> int:
        return int(self.dic.get("batch_size", 1))

    @property
    def iters(self) -> int:
        if "iters" not in self.dic:
            raise ConfigError(f"'iters' is not set in {self.path} (nor in its _base_ files)")
        return int(self.dic["iters"])

    @property
    def test_config(self) -> Dict[str, Any]:
        return dict(self.dic.get("test_config", {}) or {})

    def section(self, key: str, required: bool = True) -> Optional[Dict[str, Any]]:
        """The dict under ``key``; ``required`` -> error naming the file when absent."""
        val = self.dic.get(key)
        if val is None:
            if required:
                raise ConfigError(f"'{key}' is missing from {self.path} (and its _base_ files)")
            return None
        if not isinstance(val, dict):
            raise ConfigError(f"'{key}' in {self.origin(key)} must be a mapping, got {val!r}")
        return val

    def __repr__(self) -> str:
        return yaml.safe_dump(self.dic, sort_keys=False)
