"""PSPNet: the pyramid pooling module (chapter 07).

Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017,
https://arxiv.org/abs/1612.01105

Where ASPP (:mod:`utils.models.deeplab`) samples context with dilated
convolutions, the *pyramid pooling module* averages the dilated ResNet's
features over a 1x1, 2x2, 3x3 and 6x6 grid of bins (``bins``), reduces each
pooled map to ``1/len(bins)`` of the channels with a 1x1 convolution (batch
norm, ReLU), upsamples it bilinearly back to the feature map and concatenates
the four with the features themselves. A 3x3 convolution (512 channels),
dropout 0.1 and a 1x1 convolution score the classes, upsampled to the input.
The 1x1 bin is ASPP's image pooling; the others add context at sub-image
scales, from regions rather than from sparse taps.

Deviations from the paper: output stride 16 by default, DeepLab's, so that
the two context modules can be compared on one backbone (``output_stride=8``
is the paper's); bilinear upsampling with ``align_corners=False`` (the Caffe
code aligns corners); no auxiliary loss on ``layer3``; the backbone is
torchvision's ResNet (7x7 stem, not the paper's three 3x3 convolutions),
its residual branches initialised to zero when trained from scratch (see
:func:`utils.models.deeplab.zero_init_residual_`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.backbones.resnet import ResNet
from utils.models.backbones.vgg import scaled
from utils.models.deeplab import (
    BACKBONES,
    ConvBNReLU,
    check_images,
    zero_init_residual_,
)
from utils.models.fcn import imagenet_input

PAPER_BINS = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    """``[B, C, h, w]`` -> ``[B, 2C, h, w]`` (for four bins): the features and,
    for each bin count ``n``, the features averaged over an ``n x n`` grid,
    projected to ``C / len(bins)`` channels and upsampled back to ``h x w``.
    (In training, batch norm on the 1x1 bin needs two images per batch.)"""

    def __init__(self, in_channels: int, bins=PAPER_BINS):
        super().__init__()
        self.bins = tuple(bins)
        reduced = max(1, in_channels // len(self.bins))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(n), ConvBNReLU(in_channels, reduced, 1))
            for n in self.bins)
        self.out_channels = in_channels + reduced * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        pyramid = [x]
        for stage in self.stages:
            y = stage(x)  # (B, C/4, n, n)
            pyramid.append(F.interpolate(y, size=(h, w), mode="bilinear",
                                         align_corners=False))  # (B, C/4, h, w)
        return torch.cat(pyramid, dim=1)  # (B, 2C, h, w)


class PSPNet(nn.Module):
    """Image ``float32 [B, 3, H, W]`` in [0, 1] (normalised inside) to class
    scores ``float32 [B, num_classes, H, W]``, any ``H, W``.

    ``backbone`` is ``"resnet50"`` or ``"resnet101"`` at ``output_stride`` 16
    or 8 (the paper's); ``width`` scales the backbone's and the head's
    channels.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50",
                 output_stride: int = 16, width: float = 1.0, bins=PAPER_BINS):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, "
                             f"got {backbone!r}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
        imagenet_input(self, num_classes)  # checks and stores num_classes
        # residual branches start at zero, as DeepLab's (see zero_init_residual_)
        self.backbone = zero_init_residual_(
            ResNet(BACKBONES[backbone], output_stride, width))
        self.ppm = PyramidPooling(self.backbone.channels["layer4"], bins)
        channels = scaled(512, width)
        self.head = ConvBNReLU(self.ppm.out_channels, channels, 3)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        B, C, H, W = x.shape
        f = self.backbone((x - self.mean) / self.std)["layer4"]  # (B, 2048w, h, w)
        y = self.ppm(f)  # (B, 4096w, h, w): h, w = H/os, W/os
        y = self.dropout(self.head(y))  # (B, 512w, h, w)
        y = self.classifier(y)  # (B, K, h, w)
        return F.interpolate(y, size=(H, W), mode="bilinear",
                             align_corners=False)  # (B, K, H, W)

    def load_pretrained(self, path) -> None:
        """ImageNet ``resnet50``/``resnet101`` weights in torchvision's format
        into the backbone (the head keeps its initialisation)."""
        from utils.models.weights import load_torchvision

        load_torchvision(self.backbone, path)
