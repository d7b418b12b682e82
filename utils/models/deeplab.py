"""DeepLabV3 and DeepLabV3+: atrous spatial pyramid pooling and the decoder
(chapter 07).

Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic
Image Segmentation" (DeepLabV3), arXiv 2017, https://arxiv.org/abs/1706.05587;
Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with Atrous Separable
Convolution for Semantic Image Segmentation" (DeepLabV3+), ECCV 2018,
https://arxiv.org/abs/1802.02611

A ResNet whose last stages trade their stride for dilation (output stride 16
or 8, :mod:`utils.models.backbones.resnet`) gives dense features; **ASPP**
looks at them at several scales at once: a 1x1 convolution, three 3x3
convolutions dilated by 6, 12 and 18 (doubled at output stride 8) and
*image pooling* (the features averaged over the whole map, a 1x1
convolution, spread back over the map), each with batch norm and ReLU,
concatenated and projected to 256 channels. DeepLabV3 scores the classes on
them after one more 3x3 convolution and upsamples the scores 8x or 16x.
DeepLabV3+ adds a **decoder**: the ASPP features upsampled 4x, concatenated
with the first ResNet stage's features (stride 4) projected to 48 channels,
two 3x3 convolutions, the class scores, and a final 4x upsampling. The
*atrous separable convolution* (:class:`SeparableConv2d`: a dilated
depthwise convolution, then a 1x1 pointwise one) may replace the 3x3
convolutions of ASPP and decoder (``separable=True``), as the paper does
with its Xception backbone.

``DeepLabV3Plus(K, decoder=False)`` is DeepLabV3 with torchvision's layout
(``DeepLabHead``), so torchvision's ``deeplabv3_resnet50`` file loads into it
(:meth:`DeepLabV3Plus.torchvision_keys`) and gives torchvision's outputs.

Trained from scratch (the course's small profiles), each residual block's
last batch norm starts at zero (:func:`zero_init_residual_`), so that every
block starts as the identity; pretrained weights overwrite it.

Deviations from the paper: no multi-grid in the last stage and torchvision's
dilation of each stage's first block (see the ResNet module); dropout 0.5
after ASPP's projection (torchvision's); residual branches initialised to
zero (torchvision's ``zero_init_residual=True``, Goyal et al. 2017; the paper
starts from ImageNet weights); with ``separable=True``, no batch norm and
ReLU between the depthwise and the pointwise convolution; no auxiliary loss.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.backbones.resnet import Bottleneck, ResNet
from utils.models.backbones.vgg import scaled
from utils.models.fcn import (  # noqa: F401  (IMAGENET_*: re-exported)
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_input,
)


def check_images(x: torch.Tensor) -> None:
    """Refuse anything but an image batch ``[B, 3, H, W]``."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an image batch [B, 3, H, W], got {list(x.shape)}")


# ASPP's rates at each output stride: the same spacing in the image
ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
BACKBONES = {"resnet50": 50, "resnet101": 101}
# torchvision's DeepLabV3 files score PASCAL VOC's 20 classes and background
TORCHVISION_CLASSES = 21


@torch.no_grad()
def zero_init_residual_(backbone: nn.Module) -> nn.Module:
    """Set the last batch norm's scale of every bottleneck to zero, so that
    each residual block starts as the identity (torchvision's
    ``zero_init_residual=True``; Goyal et al., "Accurate, Large Minibatch
    SGD", 2017). From scratch on Shapes, DeepLabV3 and PSPNet stay at the
    class prior without it (their training loss stops at the prior's while
    with it it keeps falling); at initialisation the sixteen residual sums
    make the stem's gradient tens of times larger than the classifier's."""
    for block in backbone.modules():
        if isinstance(block, Bottleneck):
            nn.init.zeros_(block.bn3.weight)
    return backbone


class SeparableConv2d(nn.Module):
    """Atrous separable convolution: ``[B, C_in, H, W]`` -> ``[B, C_out, H, W]``.

    A ``kernel_size`` convolution dilated by ``dilation`` applied to each
    channel on its own (``depthwise``: ``groups = C_in``), then a 1x1
    convolution mixing the channels (``pointwise``). It has ``k^2 C_in +
    C_in C_out`` weights where a standard convolution has ``k^2 C_in C_out``.
    "Same" padding; stride 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, bias: bool = False):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size,
                                   padding=dilation * (kernel_size - 1) // 2,
                                   dilation=dilation, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x)  # (B, C_in, H, W): one spatial filter per channel
        return self.pointwise(x)  # (B, C_out, H, W)


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias), batch norm, ReLU: ``conv``, ``bn``, ``relu``.
    A 3x3 ``conv`` may be atrous (``dilation``) and separable."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 dilation: int = 1, separable: bool = False):
        if separable and kernel_size > 1:
            conv = SeparableConv2d(in_channels, out_channels, kernel_size, dilation)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size,
                             padding=dilation * (kernel_size - 1) // 2,
                             dilation=dilation, bias=False)
        super().__init__(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels),
                                     relu=nn.ReLU(inplace=True)))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: ``[B, C_in, h, w]`` -> ``[B, C_out, h, w]``.

    Five branches see the same features: ``conv1x1``; ``atrous``, one 3x3
    convolution per rate in ``rates``; *image pooling*, the map's mean
    (``pool``) through a 1x1 convolution (``image_pooling``) and spread back
    over the map. Their outputs are concatenated (``(2 + len(rates)) C_out``
    channels) and ``project``-ed back to ``C_out`` by a 1x1 convolution, then
    dropout. (In training, batch norm on the pooled ``1 x 1`` map needs at
    least two images per batch.)
    """

    def __init__(self, in_channels: int, rates=ATROUS_RATES[16],
                 out_channels: int = 256, dropout: float = 0.5,
                 separable: bool = False):
        super().__init__()
        self.rates = tuple(rates)
        self.conv1x1 = ConvBNReLU(in_channels, out_channels, 1)
        self.atrous = nn.ModuleList(
            ConvBNReLU(in_channels, out_channels, 3, dilation=r, separable=separable)
            for r in self.rates)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.image_pooling = ConvBNReLU(in_channels, out_channels, 1)
        self.project = ConvBNReLU((2 + len(self.rates)) * out_channels, out_channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        branches = [self.conv1x1(x)]  # (B, C_out, h, w)
        branches += [conv(x) for conv in self.atrous]  # 3 x (B, C_out, h, w)
        pooled = self.image_pooling(self.pool(x))  # (B, C_out, 1, 1)
        # bilinear from one value is that value everywhere (torchvision's way)
        branches.append(F.interpolate(pooled, size=(h, w), mode="bilinear",
                                      align_corners=False))  # (B, C_out, h, w)
        x = torch.cat(branches, dim=1)  # (B, 5 C_out, h, w)
        return self.dropout(self.project(x))  # (B, C_out, h, w)


class Decoder(nn.Module):
    """DeepLabV3+'s decoder: ASPP features ``[B, C, h, w]`` (stride 16 or 8)
    and the first stage's features ``[B, C_low, H/4, W/4]`` to fused features
    ``[B, C, H/4, W/4]``.

    ``low_level_proj`` (1x1, to ``low_channels`` = 48: few enough that the
    many low-level channels do not outweigh the ASPP's), then the ASPP
    features upsampled bilinearly to the low-level map's size, concatenated
    after them, and two 3x3 convolutions (``fuse``).
    """

    def __init__(self, low_level_channels: int, channels: int = 256,
                 low_channels: int = 48, separable: bool = False):
        super().__init__()
        self.low_level_proj = ConvBNReLU(low_level_channels, low_channels, 1)
        self.fuse = nn.Sequential(
            ConvBNReLU(channels + low_channels, channels, 3, separable=separable),
            ConvBNReLU(channels, channels, 3, separable=separable),
        )

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        H4, W4 = low_level.shape[-2:]
        low = self.low_level_proj(low_level)  # (B, 48, H/4, W/4)
        # "4x": exactly the low-level map's size, which odd inputs need
        x = F.interpolate(x, size=(H4, W4), mode="bilinear",
                          align_corners=False)  # (B, C, H/4, W/4)
        x = torch.cat([x, low], dim=1)  # (B, C + 48, H/4, W/4)
        return self.fuse(x)  # (B, C, H/4, W/4)


class DeepLabV3Plus(nn.Module):
    """Image ``float32 [B, 3, H, W]`` in [0, 1] (normalised inside) to class
    scores ``float32 [B, num_classes, H, W]``, any ``H, W``.

    ``backbone`` is ``"resnet50"`` or ``"resnet101"`` at ``output_stride`` 16
    or 8; ``decoder=False`` gives DeepLabV3 (torchvision's head). ``width``
    scales the backbone's channels and the head's 256 and 48.
    ``atrous_rates`` replaces the paper's rates (6, 12, 18 at stride 16; 12,
    24, 36 at 8); ``separable`` makes the 3x3 convolutions of ASPP and decoder
    atrous separable ones.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50",
                 output_stride: int = 16, decoder: bool = True, width: float = 1.0,
                 atrous_rates=None, separable: bool = False):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, "
                             f"got {backbone!r}")
        if output_stride not in ATROUS_RATES:
            raise ValueError(f"output_stride must be 16 or 8, got {output_stride!r}")
        imagenet_input(self, num_classes)  # checks and stores num_classes
        self.separable = separable
        self.backbone = zero_init_residual_(
            ResNet(BACKBONES[backbone], output_stride, width))
        channels = scaled(256, width)
        rates = ATROUS_RATES[output_stride] if atrous_rates is None else atrous_rates
        self.aspp = ASPP(self.backbone.channels["layer4"], rates, channels,
                         separable=separable)
        if decoder:
            self.decoder = Decoder(self.backbone.channels["layer1"], channels,
                                   scaled(48, width), separable=separable)
        else:
            self.decoder = None
            self.head = ConvBNReLU(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        B, C, H, W = x.shape
        f = self.backbone((x - self.mean) / self.std)
        y = self.aspp(f["layer4"])  # (B, 256w, H/os, W/os)
        if self.decoder is not None:
            y = self.decoder(y, f["layer1"])  # (B, 256w, H/4, W/4)
        else:
            y = self.head(y)  # (B, 256w, H/os, W/os)
        y = self.classifier(y)  # (B, K, H/4, W/4) or (B, K, H/os, W/os)
        return F.interpolate(y, size=(H, W), mode="bilinear",
                             align_corners=False)  # (B, K, H, W)

    # torchvision's DeepLabHead as it names our modules: ASPP's branches are
    # classifier.0.convs.0..4 (the pooling branch's conv is its index 1), the
    # projection classifier.0.project, then classifier.1/2 (3x3 conv and its
    # batch norm) and classifier.4 (the class scores).
    def torchvision_keys(self) -> dict[str, str]:
        """torchvision ``deeplabv3_resnet50`` keys -> this model's (the
        protocol of :mod:`utils.models.weights`). With the decoder, the file's
        backbone and ASPP are used; without it, everything but the auxiliary
        head, and the class scores only for its 21 classes."""
        if self.separable:
            raise ValueError("torchvision's DeepLabV3 has standard 3x3 convolutions "
                             "in ASPP; build the model with separable=False")
        keys = {f"backbone.{tv}": f"backbone.{ours}"
                for tv, ours in self.backbone.torchvision_keys().items()}
        bn = ("weight", "bias", "running_mean", "running_var")
        pairs = [("classifier.0.convs.0", "aspp.conv1x1")]
        pairs += [(f"classifier.0.convs.{i + 1}", f"aspp.atrous.{i}")
                  for i in range(len(self.aspp.atrous))]
        n = len(self.aspp.atrous) + 1
        for tv, ours in pairs:
            keys[f"{tv}.0.weight"] = f"{ours}.conv.weight"
            keys.update({f"{tv}.1.{p}": f"{ours}.bn.{p}" for p in bn})
        keys[f"classifier.0.convs.{n}.1.weight"] = "aspp.image_pooling.conv.weight"
        keys.update({f"classifier.0.convs.{n}.2.{p}": f"aspp.image_pooling.bn.{p}"
                     for p in bn})
        keys["classifier.0.project.0.weight"] = "aspp.project.conv.weight"
        keys.update({f"classifier.0.project.1.{p}": f"aspp.project.bn.{p}" for p in bn})
        if self.decoder is None:
            keys["classifier.1.weight"] = "head.conv.weight"
            keys.update({f"classifier.2.{p}": f"head.bn.{p}" for p in bn})
            if self.num_classes == TORCHVISION_CLASSES:
                keys["classifier.4.weight"] = "classifier.weight"
                keys["classifier.4.bias"] = "classifier.bias"
        return keys

    def torchvision_ignored(self) -> tuple[str, ...]:
        """The file's auxiliary head; the head the decoder replaces; the class
        scores when this model has other classes than the file's 21."""
        ignored = ["aux_classifier."]
        if self.decoder is not None:
            ignored += ["classifier.1.", "classifier.2.", "classifier.4."]
        elif self.num_classes != TORCHVISION_CLASSES:
            ignored.append("classifier.4.")
        return tuple(ignored)

    def load_pretrained(self, path) -> None:
        """torchvision's ``deeplabv3_resnet50`` file (backbone and ASPP, and
        the head without the decoder), or an ImageNet ``resnet50``/``resnet101``
        file (the backbone only); the other layers keep their initialisation."""
        from utils.models.weights import load_torchvision, read_state_dict

        state = read_state_dict(path)
        if any(key.startswith("backbone.") for key in state):
            load_torchvision(self, state)
        else:
            load_torchvision(self.backbone, state)


def deeplabv3(num_classes: int, **kwargs) -> DeepLabV3Plus:
    """DeepLabV3: :class:`DeepLabV3Plus` without the decoder."""
    return DeepLabV3Plus(num_classes, decoder=False, **kwargs)
