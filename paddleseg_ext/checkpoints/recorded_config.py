"""Read the model settings a peer checkpoint records about itself, without running anything.

mmsegmentation's checkpoints carry the config they were trained with as text:
``meta['config']`` (mmcv 1.x era, ``cfg.pretty_text``) or ``meta['cfg']`` (mmengine's
``Runner``, the same text). Some settings change a network's function without changing a
tensor's shape (PSPNet's d8 and d32 backbones, a head's ``align_corners``), so the file's keys
cannot tell them apart but its config can. The text is Python source; it is parsed with
:mod:`ast` and only literals are read (``dict(...)`` calls, dicts, lists, tuples, numbers,
strings, booleans, ``None``): nothing in it is executed or imported, and what is not a literal
reads as :data:`UNKNOWN`.
"""

from __future__ import annotations

import ast
from typing import Any, Mapping, Optional

__all__ = ["UNKNOWN", "recorded_model_config", "setting"]


class _Unknown:
    """A value the text gives as an expression, not a literal (a variable, a call ...)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


#: Stands for a value that is not a literal in the recorded text.
UNKNOWN = _Unknown()
_TEXT_KEYS = ("config", "cfg")


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.Dict):
        return {k.value: _literal(v) for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)):
        return -node.operand.value
    return UNKNOWN


def recorded_model_config(meta: Any) -> Optional[Mapping[str, Any]]:
    """The ``model`` settings of the config text in a checkpoint's ``meta``, or ``None`` when
    the file records none (no text, text that is not Python, or no top-level ``model = ...``)."""
    if not isinstance(meta, Mapping):
        return None
    text = next((meta[k] for k in _TEXT_KEYS if isinstance(meta.get(k), str)), None)
    if text is None:
        return None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    model = None
    for stmt in tree.body:  # the last assignment wins, as when the text is run
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "model"
                                                for t in stmt.targets):
            model = _literal(stmt.value)
    return model if isinstance(model, dict) else None


def setting(config: Optional[Mapping[str, Any]], *path: str) -> Any:
    """``config[path[0]][path[1]]...``, or :data:`UNKNOWN` where the path is not recorded."""
    value: Any = config
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return UNKNOWN
        value = value[key]
    return value
