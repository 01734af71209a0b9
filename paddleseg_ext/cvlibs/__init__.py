"""Registries, config loading and the builder."""
from .errors import ConfigError, run_cli
from . import manager
from .manager import Registry
from .config import Config
from .builder import SegBuilder, ComponentBuilder

__all__ = ["ConfigError", "run_cli", "manager", "Registry", "Config", "SegBuilder", "ComponentBuilder"]
