"""Optimizers and LR schedules, registered by name."""
from . import lr_schedulers, optimizers  # noqa: F401
