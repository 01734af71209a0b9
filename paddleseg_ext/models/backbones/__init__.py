"""Backbones: each returns a list of stage features and exposes feat_channels."""

from .resnet_vd import ResNet_vd, ResNet18_vd, ResNet34_vd, ResNet50_vd, ResNet101_vd

__all__ = ["ResNet_vd", "ResNet18_vd", "ResNet34_vd", "ResNet50_vd", "ResNet101_vd"]
