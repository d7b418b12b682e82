"""Panoptic FPN's semantic branch: dense classes from every FPN level
(chapter 09).

Kirillov, Girshick, He & Dollar, "Panoptic Feature Pyramid Networks", CVPR
2019, https://arxiv.org/abs/1901.02446 (section 3, figure 3). Each pyramid
level ``P2 .. P5`` (strides 4 .. 32) is brought to 1/4 scale by as many
upsampling stages as it needs (``P5``: three, ``P2``: none, but still one
convolution): each stage a 3x3 convolution (128 channels), group norm, ReLU
and a 2x bilinear upsampling. The four 1/4-scale maps are **summed** (every
level votes at every pixel), a 1x1 convolution gives the class scores and a
4x bilinear upsampling brings them to the image's size.

Semantics follow detectron2's ``SemSegFPNHead`` (its initialisation: He
normal, fan-out, for the 3x3 convolutions; normal with standard deviation
0.001 for the 1x1 predictor; ``align_corners=False`` everywhere).

Deviations from the paper: group norm with :func:`norm_groups` groups: 32 at
full width (128 channels), fewer for ``width``-scaled channel counts, always
at least 2 channels per group (a group of one channel on a 1x1 map would
have a single value to normalise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = ("p2", "p3", "p4", "p5")  # the levels the branch merges, finest first


def norm_groups(channels: int, most: int = 32) -> int:
    """The largest divisor of ``channels`` that is at most ``most`` and leaves
    at least 2 channels per group (1 for a single channel)."""
    return max([g for g in range(1, most + 1)
                if channels % g == 0 and channels // g >= 2] or [1])


class UpsampleStage(nn.Sequential):
    """3x3 convolution, group norm, ReLU, then (``upsample``) 2x bilinear."""

    def __init__(self, in_channels: int, channels: int, upsample: bool):
        layers = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                  nn.GroupNorm(norm_groups(channels), channels),
                  nn.ReLU(inplace=True)]
        if upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="bilinear",
                                      align_corners=False))
        super().__init__(*layers)


class SemanticFPNHead(nn.Module):
    """FPN maps ``{"p2": [B, C, H/4, W/4], ..., "p5": [B, C, H/32, W/32]}`` to
    class scores ``float [B, num_classes, H, W]`` (``H, W`` four times
    ``P2``'s size). Extra levels in the dict (``p6``) are not used."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 128,
                 levels: tuple[str, ...] = LEVELS):
        super().__init__()
        self.levels = tuple(levels)
        # Level k (stride 4 * 2**k) needs k upsampling stages, at least one conv.
        self.scale_heads = nn.ModuleList(
            nn.Sequential(*[UpsampleStage(in_channels if j == 0 else channels,
                                          channels, upsample=k > 0)
                            for j in range(max(1, k))])
            for k in range(len(self.levels)))
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.predictor:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def merge(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed 1/4-scale map ``[B, channels, H/4, W/4]``."""
        missing = [k for k in self.levels if k not in features]
        if missing:
            raise ValueError(f"the semantic branch needs FPN levels {self.levels}, "
                             f"missing {missing}")
        x = self.scale_heads[0](features[self.levels[0]])  # (B, 128, H/4, W/4)
        for head, name in zip(self.scale_heads[1:], self.levels[1:]):
            x = x + head(features[name])  # (B, 128, H/4, W/4): all levels summed
        return x

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.predictor(self.merge(features))  # (B, K, H/4, W/4)
        return F.interpolate(x, scale_factor=4, mode="bilinear",
                             align_corners=False)  # (B, K, H, W)
