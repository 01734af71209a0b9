"""Reusable layers shared by all segmentation models."""

from . import point_geometry
from .attention import CAM, PAM
from .aux_head import AuxHead
from .fpn import FPN, SemanticFPNHead
from .conv_bn import ConvBN, ConvBNReLU
from .norm import SyncBatchNorm, use_sync_bn
from .pyramid_pooling import PPModule
from .psa_block import PSAModule, psa_aggregate
from .resize import resize_to, spatial_size
from .softmax import channel_softmax

__all__ = ["CAM", "PAM", "FPN", "SemanticFPNHead", "point_geometry", "AuxHead", "channel_softmax", "ConvBN", "ConvBNReLU", "PPModule", "PSAModule", "psa_aggregate", "SyncBatchNorm", "resize_to",
           "spatial_size", "use_sync_bn"]
