"""Models, backbones, layers and losses; importing registers them all."""

from . import backbones, layers, losses  # noqa: F401
from .pspnet import PSPNet
from .psanet import PSANet
from .danet import DANet
from .pointrend import PointRend

__all__ = ["PSPNet", "PSANet", "DANet", "PointRend", "backbones", "layers", "losses"]
