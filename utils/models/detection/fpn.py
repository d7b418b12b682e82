"""Feature Pyramid Network on a ResNet: Mask R-CNN's backbone (chapter 08).

Lin, Dollar, Girshick, He, Hariharan & Belongie, "Feature Pyramid Networks for
Object Detection", CVPR 2017, https://arxiv.org/abs/1612.03144 (section 3).

A ResNet's stages ``C2 .. C5`` (``layer1`` .. ``layer4``, strides 4 .. 32)
are strong but coarse at the top and fine but weak at the bottom. The FPN
gives every level both: a **lateral** 1x1 convolution brings each ``C_k`` to
the same 256 channels, a **top-down** pathway upsamples the level above by 2
(nearest neighbour) and adds it, and an **output** 3x3 convolution smooths
each sum (against the aliasing of the upsampling), giving ``P2 .. P5``. A
sixth level ``P6``, a stride-2 subsampling of ``P5`` (section 4.1), gives the
RPN anchors of 512 pixels; the RoI heads pool from ``P2 .. P5`` only.

Semantics and parameter names are torchvision's ``FeaturePyramidNetwork``
with ``LastLevelMaxPool`` and ``BackboneWithFPN``, as saved in its published
Mask R-CNN file (``backbone.body.*`` the ResNet, ``backbone.fpn.inner_blocks.
k`` the lateral and ``backbone.fpn.layer_blocks.k`` the output convolutions,
both plain ``Conv2d`` with a bias): its initialisation (Kaiming uniform with
``a=1``, zero bias), the order of operations and ``P6`` as
``max_pool2d(P5, kernel_size=1, stride=2)``.

Deviations from the paper: none in the network. The maps are named by their
levels (``"p2"`` .. ``"p6"``) where torchvision uses ``"0"`` .. ``"3"``,
``"pool"``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.backbones.resnet import ResNet


class FeaturePyramidNetwork(nn.Module):
    """Bottom-up maps ``C_k`` (finest first) to pyramid maps ``P_k`` of
    ``out_channels`` channels each, plus ``P6``.

    Args:
        in_channels_list: channels of each input map, finest first
            (ResNet-50: 256, 512, 1024, 2048).
        out_channels: channels of every pyramid level (the paper's 256).
        names: names of the output levels, finest first; one more than the
            inputs (the last is ``P6``).

    ``forward`` takes a dict of ``[B, C_k, H_k, W_k]`` maps, finest first, each
    level half the size of the one below (rounded up), and returns an
    ordered dict ``{name: [B, out_channels, H_k, W_k]}`` with ``P6`` last.
    """

    def __init__(self, in_channels_list: list[int], out_channels: int,
                 names: tuple[str, ...] = ("p2", "p3", "p4", "p5", "p6")):
        super().__init__()
        if len(names) != len(in_channels_list) + 1:
            raise ValueError(f"{len(in_channels_list)} input maps need "
                             f"{len(in_channels_list) + 1} names (the last for P6), "
                             f"got {names}")
        self.names = tuple(names)
        self.inner_blocks = nn.ModuleList(  # the lateral 1x1 convolutions
            nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.layer_blocks = nn.ModuleList(  # the output 3x3 convolutions
            nn.Conv2d(out_channels, out_channels, 3, padding=1)
            for _ in in_channels_list)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = list(features.values())  # C2 .. C5
        if len(c) != len(self.inner_blocks):
            raise ValueError(f"expected {len(self.inner_blocks)} feature maps, "
                             f"got {len(c)}")
        last_inner = self.inner_blocks[-1](c[-1])  # (B, 256, H/32, W/32)
        results = [self.layer_blocks[-1](last_inner)]  # P5
        for k in range(len(c) - 2, -1, -1):
            lateral = self.inner_blocks[k](c[k])  # (B, 256, H_k, W_k)
            # Nearest-neighbour upsampling to the lateral's exact size (the
            # sizes need not be exact doubles when the input is odd).
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:],
                                     mode="nearest")  # (B, 256, H_k, W_k)
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[k](last_inner))  # P_k
        # P6: every second pixel of P5 (a 1x1 max-pool with stride 2).
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2,
                                    padding=0))  # (B, 256, H/64, W/64)
        return OrderedDict(zip(self.names, results))


class BackboneWithFPN(nn.Module):
    """A ResNet body and an FPN: image ``float [B, 3, H, W]`` (normalised) to
    ``{"p2": [B, C, H/4, W/4], ..., "p5": [B, C, H/32, W/32], "p6": [B, C,
    H/64, W/64]}`` (sizes rounded up), ``C = out_channels``."""

    def __init__(self, body: ResNet, out_channels: int):
        super().__init__()
        self.body = body
        stages = ("layer1", "layer2", "layer3", "layer4")
        self.fpn = FeaturePyramidNetwork([body.channels[s] for s in stages],
                                         out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.body(x)  # {"layer1": C2, ..., "layer4": C5}
        return self.fpn(OrderedDict((k, c[k]) for k in
                                    ("layer1", "layer2", "layer3", "layer4")))
