"""Registries, config loading and the builder."""
from .errors import ConfigError
from . import manager
from .manager import Registry
from .config import Config
from .builder import SegBuilder, ComponentBuilder

__all__ = ["ConfigError", "manager", "Registry", "Config", "SegBuilder", "ComponentBuilder"]
