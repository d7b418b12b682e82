"""Panoptic segmentation (chapter 09): the fusion of things and stuff, and
Panoptic FPN."""

from utils.models.panoptic.fusion import (
    FusionConfig,
    add_stuff,
    panoptic_fusion,
    paste_things,
)
from utils.models.panoptic.panoptic_fpn import PanopticFPN, PanopticFPNConfig
from utils.models.panoptic.semantic_fpn import SemanticFPN
from utils.models.panoptic.semantic_head import SemanticFPNHead
from utils.models.panoptic.separate import SeparatePanoptic

__all__ = ["FusionConfig", "PanopticFPN", "PanopticFPNConfig", "SemanticFPN",
           "SemanticFPNHead", "SeparatePanoptic", "add_stuff", "panoptic_fusion",
           "paste_things"]
