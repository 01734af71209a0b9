"""Segmentation losses: forward(logit [N,C,H,W], label [N,H,W] int64) -> scalar."""

from .cross_entropy_loss import CrossEntropyLoss
from .dice_loss import DiceLoss
from .mixed_loss import MixedLoss
from .ohem_cross_entropy_loss import OhemCrossEntropyLoss
from .point_cross_entropy_loss import PointCrossEntropyLoss

__all__ = ["CrossEntropyLoss", "DiceLoss", "MixedLoss", "OhemCrossEntropyLoss",
           "PointCrossEntropyLoss"]
