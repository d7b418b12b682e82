"""TinyFCN: the first network of the course (chapter 00).

A fully convolutional network in its smallest useful form: a stack of 3x3
convolutions that halves the resolution twice, a 1x1 convolution that scores
every class at every position, and bilinear upsampling back to the input size.
No fully connected layer, so any input size works. It is the command line's
default ``--model``.

GroupNorm rather than BatchNorm: its statistics do not depend on the batch, so
tiny batches, evaluation and multi-process training all see the same network.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(
    cin: int, cout: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """3x3 convolution (padding keeps the size at stride 1), GroupNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(
            cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False
        ),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class TinyFCN(nn.Module):
    """Image ``float32 [B, 3, H, W]`` to class scores ``[B, num_classes, H, W]``."""

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        c = max(8, round(32 * width))
        self.encoder = nn.Sequential(
            conv_block(3, c),
            conv_block(c, 2 * c, stride=2),
            conv_block(2 * c, 2 * c),
            conv_block(2 * c, 4 * c, stride=2),
            conv_block(4 * c, 4 * c, dilation=2),  # wider context at no cost
        )
        self.classifier = nn.Conv2d(4 * c, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        features = self.encoder(x)  # (B, 4c, H/4, W/4)
        scores = self.classifier(features)  # (B, K, H/4, W/4)
        return F.interpolate(scores, size=(H, W), mode="bilinear", align_corners=False)
