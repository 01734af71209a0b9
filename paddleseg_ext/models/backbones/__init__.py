"""Backbones: each returns a list of stage features and exposes feat_channels."""

from .efficientnet_lite import EfficientNet_Lite, EfficientNet_Lite0
from .resnet_vd import ResNet_vd, ResNet18_vd, ResNet34_vd, ResNet50_vd, ResNet101_vd

__all__ = ["EfficientNet_Lite", "EfficientNet_Lite0", "ResNet_vd", "ResNet18_vd", "ResNet34_vd", "ResNet50_vd", "ResNet101_vd"]
