"""Registries, config loading and the builder."""
from .errors import ConfigError
from . import manager
from .manager import Registry
from .config import Config
from .builder import SegBuilder, ComponentBuilder

__all__ = ["ConfigError", "manager", "Registry", "Config", "SegBuilder", "ComponentBuilder"]


def __getattr__(name):
    # run_cli moved to paddleseg_ext.utils.cli (it is the tools' front-end, not config);
    # imported lazily because utils.cli itself imports cvlibs.errors.
    if name == "run_cli":
        from ..utils.cli import run_cli

        return run_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
