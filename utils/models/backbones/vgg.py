"""VGG16, the backbone of FCN (chapter 03).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, https://arxiv.org/abs/1409.1556

Thirteen 3x3 convolutions in five stages, each stage closed by a 2x2 max-pool
that halves the resolution, then two fully connected layers (fc6, fc7) of 4096
units. Here fc6 and fc7 are already convolutions, as in FCN (Long et al. 2015):
fc6 is a 7x7 convolution over pool5 and fc7 a 1x1 convolution, so the network
takes any input size and gives a map of fc7 features, one per 32x32 block of
the input. :func:`utils.models.load_vgg16_torchvision` loads ImageNet weights
in torchvision's format into it.

``width`` multiplies every channel count (1.0 = the paper's 64..512 and 4096),
so that the ``ci`` and ``cpu`` profiles can train a small copy of the same
architecture.

Deviations from the paper: fc6 is padded by 3 (a "same" 7x7 convolution) and
the max-pools round up (``ceil_mode``, as Caffe's do), so that any input of at
least one pixel gives a map of ``ceil(H/32) x ceil(W/32)`` fc7 features whose
cell ``i`` covers input pixels ``[32 i, 32 i + 32)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

# Output channels of the five stages and of fc6/fc7 at width 1.0, and the number
# of 3x3 convolutions in each stage.
STAGE_CHANNELS = (64, 128, 256, 512, 512)
STAGE_DEPTHS = (2, 2, 3, 3, 3)
FC_CHANNELS = 4096


def scaled(channels: int, width: float) -> int:
    """``channels * width``, rounded, at least 1: the channels of a slim copy."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, round(channels * width))


def _stage(index: int, cin: int, cout: int, depth: int) -> nn.Sequential:
    """Stage ``index``: ``depth`` x (3x3 conv, ReLU), then a 2x2 max-pool."""
    layers = OrderedDict()
    for k in range(1, depth + 1):
        layers[f"conv{index}_{k}"] = nn.Conv2d(cin if k == 1 else cout, cout, 3,
                                               padding=1)
        layers[f"relu{index}_{k}"] = nn.ReLU(inplace=True)
    layers[f"pool{index}"] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
    return nn.Sequential(layers)


class VGG16(nn.Module):
    """Image ``float32 [B, 3, H, W]`` (ImageNet-normalised) to VGG16 features.

    ``forward`` returns a dict of the maps FCN's skips need:

    - ``"pool3"``: ``[B, 256w, ceil(H/8), ceil(W/8)]``
    - ``"pool4"``: ``[B, 512w, ceil(H/16), ceil(W/16)]``
    - ``"pool5"``: ``[B, 512w, ceil(H/32), ceil(W/32)]``
    - ``"fc7"``: ``[B, 4096w, ceil(H/32), ceil(W/32)]`` (after ReLU and dropout)

    where ``w`` is ``width`` (channel counts rounded, at least 1).
    """

    def __init__(self, width: float = 1.0, dropout: float = 0.5):
        super().__init__()
        self.width = width
        channels = [scaled(c, width) for c in STAGE_CHANNELS]
        self.channels = dict(zip(("pool1", "pool2", "pool3", "pool4", "pool5"),
                                 channels))
        self.fc_channels = scaled(FC_CHANNELS, width)
        cin = 3
        for i, (cout, depth) in enumerate(zip(channels, STAGE_DEPTHS), start=1):
            setattr(self, f"conv{i}", _stage(i, cin, cout, depth))
            cin = cout
        # fc6 sees a 7x7 window of pool5, exactly like the classifier's first
        # Linear layer sees the whole 7x7 pool5 map of a 224x224 image.
        self.fc6 = nn.Conv2d(cin, self.fc_channels, 7, padding=3)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Conv2d(self.fc_channels, self.fc_channels, 1)
        self.drop7 = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (fan-in) and zero biases: without batch norm, this
        keeps the activations' scale through all fifteen layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B, C, H, W = x.shape
        if C != 3:
            raise ValueError(f"VGG16 expects 3 input channels, got {list(x.shape)}")
        x = self.conv1(x)  # (B, 64w, H/2, W/2)
        x = self.conv2(x)  # (B, 128w, H/4, W/4)
        pool3 = self.conv3(x)  # (B, 256w, H/8, W/8)
        pool4 = self.conv4(pool3)  # (B, 512w, H/16, W/16)
        pool5 = self.conv5(pool4)  # (B, 512w, H/32, W/32)
        x = self.drop6(F.relu(self.fc6(pool5)))  # (B, 4096w, H/32, W/32)
        fc7 = self.drop7(F.relu(self.fc7(x)))  # (B, 4096w, H/32, W/32)
        return {"pool3": pool3, "pool4": pool4, "pool5": pool5, "fc7": fc7}


def feature_size(size: int, stride: int) -> int:
    """Side of a VGG16 feature map at ``stride`` (2..32) for an input side
    ``size``: each ceil-mode pool rounds up."""
    for _ in range(int(math.log2(stride))):
        size = -(-size // 2)
    return size
