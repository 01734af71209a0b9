"""Reusable layers shared by all segmentation models."""

from .aux_head import AuxHead
from .conv_bn import ConvBN, ConvBNReLU
from .norm import SyncBatchNorm, use_sync_bn
from .pyramid_pooling import PPModule
from .resize import resize_to, spatial_size

__all__ = ["AuxHead", "ConvBN", "ConvBNReLU", "PPModule", "SyncBatchNorm", "resize_to",
           "spatial_size", "use_sync_bn"]
