"""Semantic FPN: Panoptic FPN's semantic branch on its own ResNet-50-FPN, a
semantic segmentation model (chapter 09).

Kirillov, Girshick, He & Dollar, "Panoptic Feature Pyramid Networks", CVPR
2019, https://arxiv.org/abs/1901.02446 (section 4.2: the branch alone, for
semantic segmentation). Chapter 09 pairs it with a separately trained Mask
R-CNN to compare "two networks, fused" with the shared Panoptic FPN.

Contract (the semantic task): images ``float32 [B, 3, H, W]`` in [0, 1]
(normalised inside with ImageNet's statistics, padded to a multiple of 32)
-> scores ``float32 [B, num_classes, H, W]``.

Deviations from the paper: none beyond the branch's (:mod:`.semantic_head`);
``width`` scales every channel count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.backbones.resnet import ResNet
from utils.models.backbones.vgg import scaled
from utils.models.detection.fpn import BackboneWithFPN
from utils.models.fcn import IMAGENET_MEAN, IMAGENET_STD
from utils.models.panoptic.semantic_head import SemanticFPNHead


class SemanticFPN(nn.Module):
    """ResNet-50-FPN and the semantic branch: ``SemanticFPN(num_classes,
    width=w)``; see the module docstring for the contract."""

    def __init__(self, num_classes: int, width: float = 1.0, channels: int = 128):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = BackboneWithFPN(ResNet(50, width=width), scaled(256, width))
        self.head = SemanticFPNHead(self.backbone.out_channels, num_classes,
                                    scaled(channels, width))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be float [B, 3, H, W], got "
                             f"{list(images.shape)}")
        H, W = images.shape[-2:]
        x = (images - self.mean) / self.std
        # Pad bottom and right to a multiple of 32: every level halves exactly.
        x = F.pad(x, (0, -W % 32, 0, -H % 32))  # (B, 3, H', W')
        scores = self.head(self.backbone(x))  # (B, K, H', W')
        return scores[..., :H, :W]  # (B, K, H, W)
