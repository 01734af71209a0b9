"""Models, backbones, layers and losses; importing registers them all."""

from . import backbones, layers, losses  # noqa: F401
from .pspnet import PSPNet

__all__ = ["PSPNet", "backbones", "layers", "losses"]
