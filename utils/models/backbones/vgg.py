"""VGG16: FCN's backbone (chapter 03), SegNet's encoder (chapter 05) and the
Dilation10 front end (chapter 06).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, https://arxiv.org/abs/1409.1556

Thirteen 3x3 convolutions in five stages (``conv1`` .. ``conv5``), each stage
closed by a 2x2 max-pool (``pool1`` .. ``pool5``) that halves the resolution,
then two fully connected layers (fc6, fc7) of 4096 units. Here fc6 and fc7 are
already convolutions, as in FCN (Long et al. 2015): fc6 is a 7x7 convolution
over pool5 and fc7 a 1x1 convolution, so the network takes any input size and
gives a map of fc7 features, one per 32x32 block of the input. The input is an
image normalised with ImageNet's statistics (mean 0.485, 0.456, 0.406; std
0.229, 0.224, 0.225), as torchvision's weights expect.

Three switches serve the later chapters:

- ``batch_norm=True`` puts a batch norm between each convolution and its ReLU,
  as torchvision's ``vgg16_bn`` (and SegNet's encoder) does;
- ``forward(x, return_indices=True)`` also returns where each pool's maxima
  were, which SegNet's decoder unpools with;
- ``output_stride`` 16 or 8 trades pools for dilation, as Yu & Koltun's
  Dilation10 front end does (DeepLab v1 keeps them with stride 1): at 16,
  ``pool5`` is removed (``nn.Identity``) and fc6 is dilated by 2; at 8,
  ``pool4`` and ``pool5`` are removed, the three conv5 convolutions are
  dilated by 2 and fc6 by 4. Each removed pool's output is its input, and
  the layers after it are dilated so that their taps stay as far apart in the
  image as before (fc6's 7x7 taps 32 pixels apart) while they are evaluated 2
  or 4 times as densely. Unlike ResNet's strided convolutions (see
  :mod:`~utils.models.backbones.resnet`), a removed max-pool changes the
  function: the maps are not a denser sampling of the undilated network's,
  and the ImageNet weights are a starting point to fine-tune from, as in the
  papers.

``width`` multiplies every channel count (1.0 = the paper's 64..512 and 4096),
so that the ``ci`` and ``cpu`` profiles can train a small copy of the same
architecture. :func:`utils.models.load_torchvision` loads torchvision's
``vgg16`` and ``vgg16_bn`` ImageNet files into it (see
:meth:`VGG16.torchvision_keys`).

Deviations from the paper: the max-pools round up (``ceil_mode``, as Caffe's
do; torchvision's round down, which gives the same maps when the input's sides
are multiples of 32), and fc6 is padded to a "same" convolution (3 x its
dilation; Yu & Koltun's front end uses unpadded convolutions on a
reflection-padded image instead), so that any input of at least one pixel gives
a map of ``ceil(H/s) x ceil(W/s)`` features at stride ``s`` whose cell ``i``
covers input pixels ``[s i, s i + s)``.
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
# output_stride -> (pools kept, dilation of conv5, dilation of fc6)
DILATION = {32: (5, 1, 1), 16: (4, 1, 2), 8: (3, 2, 4)}


def scaled(channels: int, width: float) -> int:
    """``channels * width``, rounded, at least 1: the channels of a slim copy."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, round(channels * width))


def _stage(index: int, cin: int, cout: int, depth: int, batch_norm: bool,
           dilation: int) -> nn.Sequential:
    """Stage ``index``: ``depth`` x (3x3 conv [, batch norm], ReLU)."""
    layers = OrderedDict()
    for k in range(1, depth + 1):
        # padding = dilation keeps the size: a dilated 3x3 spans 2*dilation + 1
        layers[f"conv{index}_{k}"] = nn.Conv2d(cin if k == 1 else cout, cout, 3,
                                               padding=dilation, dilation=dilation)
        if batch_norm:
            layers[f"conv{index}_{k}_bn"] = nn.BatchNorm2d(cout)
        layers[f"relu{index}_{k}"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


def _pool(kept: bool) -> nn.Module:
    """A 2x2 max-pool that also returns its argmax, or nothing (removed)."""
    if not kept:
        return nn.Identity()
    return nn.MaxPool2d(2, stride=2, ceil_mode=True, return_indices=True)


def _run_stage(conv: nn.Module, pool: nn.Module, x: torch.Tensor):
    """(stage output before its pool, after its pool, the pool's indices or
    ``None`` for a removed pool)."""
    before = conv(x)
    if isinstance(pool, nn.Identity):
        return before, before, None
    after, indices = pool(before)
    return before, after, indices


class VGG16(nn.Module):
    """Image ``float32 [B, 3, H, W]`` (ImageNet-normalised) to VGG16 features.

    ``forward(x, return_indices=False)`` returns a dict, with ``w`` the width
    (channel counts rounded, at least 1) and ``s_n`` the stride after pool n
    (2, 4, 8, 16, 32 at output stride 32; 16, 16 for pool4, pool5 at 16;
    8, 8, 8 for pool3..pool5 at 8):

    - ``"conv1"`` .. ``"conv5"``: each stage's output before its pool,
      ``[B, c_n, ceil(H/s_{n-1}), ceil(W/s_{n-1})]`` (``s_0 = 1``), with
      ``c = 64w, 128w, 256w, 512w, 512w``;
    - ``"pool1"`` .. ``"pool5"``: after the pool, ``[B, c_n, ceil(H/s_n),
      ceil(W/s_n)]``; the same tensor as ``"convN"`` where the pool is removed;
    - ``"fc7"`` (when ``classifier``): ``[B, 4096w, ceil(H/s_5), ceil(W/s_5)]``
      after ReLU and dropout;
    - with ``return_indices=True``, ``"indices1"`` .. ``"indices5"``: ``int64``
      of pool n's output shape, each the flat index ``row * W_n + column`` of
      the maximum in the pool's input (``F.max_unpool2d``'s convention); absent
      for a removed pool.

    ``channels`` gives ``c_n`` under both ``"convN"`` and ``"poolN"``,
    ``strides`` the stride of every returned map, ``fc_channels`` fc7's
    channels (``None`` without the classifier).
    """

    def __init__(self, width: float = 1.0, batch_norm: bool = False,
                 classifier: bool = True, output_stride: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        if output_stride not in DILATION:
            raise ValueError(
                f"output_stride must be 32, 16 or 8, got {output_stride!r}")
        self.width = width
        self.batch_norm = batch_norm
        self.classifier = classifier
        self.output_stride = output_stride
        pools_kept, conv5_dilation, fc6_dilation = DILATION[output_stride]
        channels = [scaled(c, width) for c in STAGE_CHANNELS]
        self.channels, self.strides, stride = {}, {}, 1
        for n, c in enumerate(channels, start=1):
            self.strides[f"conv{n}"] = stride
            stride *= 2 if n <= pools_kept else 1
            self.strides[f"pool{n}"] = stride
            self.channels[f"conv{n}"] = self.channels[f"pool{n}"] = c
        c1, c2, c3, c4, c5 = channels
        d1, d2, d3, d4, d5 = STAGE_DEPTHS
        # Registered in the network's order: stage, its pool, the next stage.
        self.conv1 = _stage(1, 3, c1, d1, batch_norm, 1)
        self.pool1 = _pool(True)
        self.conv2 = _stage(2, c1, c2, d2, batch_norm, 1)
        self.pool2 = _pool(True)
        self.conv3 = _stage(3, c2, c3, d3, batch_norm, 1)
        self.pool3 = _pool(True)
        self.conv4 = _stage(4, c3, c4, d4, batch_norm, 1)
        self.pool4 = _pool(pools_kept >= 4)
        self.conv5 = _stage(5, c4, c5, d5, batch_norm, conv5_dilation)
        self.pool5 = _pool(pools_kept >= 5)
        self.fc_channels = scaled(FC_CHANNELS, width) if classifier else None
        if classifier:
            self.strides["fc7"] = stride
            # fc6 sees a 7x7 window of pool5, exactly like the classifier's first
            # Linear layer sees the whole 7x7 pool5 map of a 224x224 image;
            # dilated, its taps stay 32 pixels apart in the image.
            self.fc6 = nn.Conv2d(c5, self.fc_channels, 7, padding=3 * fc6_dilation,
                                 dilation=fc6_dilation)
            self.drop6 = nn.Dropout(dropout)
            self.fc7 = nn.Conv2d(self.fc_channels, self.fc_channels, 1)
            self.drop7 = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (fan-in) and zero biases: without batch norm, this
        keeps the activations' scale through all fifteen layers. Batch norms
        start as the identity (scale 1, shift 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def forward(self, x: torch.Tensor,
                return_indices: bool = False) -> dict[str, torch.Tensor]:
        B, C, H, W = x.shape
        if C != 3:
            raise ValueError(f"VGG16 expects 3 input channels, got {list(x.shape)}")
        f = {}
        # Shapes at output stride 32; a removed pool keeps its input's shape.
        # (B, 64w, H, W), then pooled (B, 64w, H/2, W/2)
        f["conv1"], f["pool1"], i1 = _run_stage(self.conv1, self.pool1, x)
        # (B, 128w, H/2, W/2), then (B, 128w, H/4, W/4)
        f["conv2"], f["pool2"], i2 = _run_stage(self.conv2, self.pool2, f["pool1"])
        # (B, 256w, H/4, W/4), then (B, 256w, H/8, W/8)
        f["conv3"], f["pool3"], i3 = _run_stage(self.conv3, self.pool3, f["pool2"])
        # (B, 512w, H/8, W/8), then (B, 512w, H/16, W/16)
        f["conv4"], f["pool4"], i4 = _run_stage(self.conv4, self.pool4, f["pool3"])
        # (B, 512w, H/16, W/16), then (B, 512w, H/32, W/32)
        f["conv5"], f["pool5"], i5 = _run_stage(self.conv5, self.pool5, f["pool4"])
        if self.classifier:
            x = self.drop6(F.relu(self.fc6(f["pool5"])))  # (B, 4096w, H/32, W/32)
            f["fc7"] = self.drop7(F.relu(self.fc7(x)))  # (B, 4096w, H/32, W/32)
        if return_indices:
            for n, indices in enumerate((i1, i2, i3, i4, i5), start=1):
                if indices is not None:
                    f[f"indices{n}"] = indices  # int64, pool n's output shape
        return f

    def torchvision_keys(self) -> dict[str, str]:
        """torchvision ``vgg16`` (or ``vgg16_bn``) state-dict keys -> this
        model's, in the network's order (the protocol of
        :mod:`utils.models.weights`).

        torchvision keeps the thirteen convolutions in one ``features``
        Sequential: without batch norm, conv ``features.N`` is followed by its
        ReLU (N = 0, 2, 5, 7, 10, ...: a max-pool after each stage); with batch
        norm, by its batch norm ``features.N+1`` and then the ReLU (N = 0, 3, 7,
        10, 14, ...). fc6 and fc7 are ``classifier.0`` and ``classifier.3``
        (Linear layers, read into the 7x7 and 1x1 convolutions).
        """
        mapping = {}
        index = 0  # position in torchvision's ``features`` Sequential
        for stage, depth in enumerate(STAGE_DEPTHS, start=1):
            for k in range(1, depth + 1):
                name = f"conv{stage}.conv{stage}_{k}"
                for p in ("weight", "bias"):
                    mapping[f"features.{index}.{p}"] = f"{name}.{p}"
                if self.batch_norm:
                    for p in ("weight", "bias", "running_mean", "running_var"):
                        mapping[f"features.{index + 1}.{p}"] = f"{name}_bn.{p}"
                index += 3 if self.batch_norm else 2  # conv [, bn], ReLU
            index += 1  # the stage's max-pool
        if self.classifier:
            for tv, ours in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
                for p in ("weight", "bias"):
                    mapping[f"{tv}.{p}"] = f"{ours}.{p}"
        return mapping

    def torchvision_ignored(self) -> tuple[str, ...]:
        """The heads of torchvision's file this model does not use: the 1000
        ImageNet classes, and fc6/fc7 too without the classifier."""
        return ("classifier.6.",) if self.classifier else ("classifier.",)


def feature_size(size: int, stride: int) -> int:
    """Side of a VGG16 feature map at ``stride`` (2..32) for an input side
    ``size``: each ceil-mode pool rounds up."""
    for _ in range(int(math.log2(stride))):
        size = -(-size // 2)
    return size
