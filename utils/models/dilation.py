"""Dilation10: the dilated VGG16 front end and the context module (chapter 06).

Yu & Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR
2016, https://arxiv.org/abs/1511.07122

The *front end* is VGG16 made denser: pool4 and pool5 are removed, conv5's
three convolutions are dilated by 2 and fc6 by 4, so that every layer after
the removed pools sees the image pixels it saw before, evaluated 2 or 4 times
as densely; fc7's features come at stride 8 instead of 32
(``VGG16(output_stride=8)``, :mod:`utils.models.backbones.vgg`). A 1x1
convolution (``final``) scores the classes on them.

The *context module* takes those ``C`` class scores and returns ``C`` refined
ones. It is a chain of 3x3 convolutions whose dilations grow exponentially,
each followed by a ReLU (the paper's "truncation"), then a 1x1 convolution,
all at the front end's resolution. The paper's basic module (Table 1) uses
dilations 1, 1, 2, 4, 8, 16, 1 and reaches a 67x67 receptive field on the
score map with ``7 * 9 C^2 + C^2 = 64 C^2`` weights; Dilation10, the model
the paper trained on Cityscapes, adds layers dilated 32 and 64 (receptive
field 259). Standard initialisations did not train the module, so the paper
initialises every layer to the *identity* (:func:`identity_init_`): the
fresh module passes its input through, and training only adds context. The
scores are upsampled 8x by fixed bilinear interpolation.

Deviations from the paper: "same" padding throughout (the paper pads the image
by reflection and uses unpadded convolutions) and ceil-mode pools, see
:mod:`utils.models.backbones.vgg`; the front end and the context module are
trained together from the start rather than in two stages.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.models.backbones.vgg import VGG16
from utils.models.deeplab import check_images
from utils.models.fcn import (  # noqa: F401  (IMAGENET_*: re-exported)
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_input,
)
from utils.models.upsampling import bilinear_upsampling

# Dilations of the context module's 3x3 layers (Table 1: the basic module),
# followed in both by the 1x1 layer.
BASIC_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
DILATION10_DILATIONS = (1, 1, 2, 4, 8, 16, 32, 64, 1)
# Table 1, "large" module: output channels of the 3x3 layers, in units of C.
LARGE_MULTIPLIERS = (2, 2, 4, 8, 16, 32, 32)


@torch.no_grad()
def identity_init_(conv: nn.Conv2d, channels: int | None = None,
                   noise_std: float = 0.0,
                   generator: torch.Generator | None = None) -> nn.Conv2d:
    """Initialise ``conv`` so that it passes its input on (Yu & Koltun, Sec. 3).

    With ``c_in`` input and ``c_out`` output channels and ``C = channels``
    (the module's channels; default ``min(c_in, c_out)``), the kernel's
    centre tap joins input ``a`` to output ``b`` with weight ``C / c_out``
    when ``floor(a C / c_in) == floor(b C / c_out)``; every other weight is
    ``N(0, noise_std^2)`` noise (0 by default) and the bias is 0. With
    ``c_in == c_out == C`` this is the identity. When the channels grow to
    ``m C``, each input feeds a block of ``m`` outputs with ``1/m`` of its
    value, and the layer that brings them back to ``C`` sums the block.
    Returns ``conv``.
    """
    c_out, c_in, k_h, k_w = conv.weight.shape
    if k_h % 2 == 0 or k_w % 2 == 0:
        raise ValueError(f"identity initialisation needs an odd kernel, got "
                         f"{k_h}x{k_w}")
    if conv.groups != 1:
        raise ValueError("identity initialisation needs groups=1")
    C = min(c_in, c_out) if channels is None else channels
    if c_in % C or c_out % C:
        raise ValueError(f"channels {c_in} -> {c_out} must be multiples of C = {C}")
    if noise_std:
        conv.weight.normal_(0.0, noise_std, generator=generator)
    else:
        conv.weight.zero_()
    a = torch.arange(c_in)
    b = torch.arange(c_out)
    joined = (b[:, None] * C // c_out) == (a[None, :] * C // c_in)  # [c_out, c_in]
    centre = conv.weight[:, :, k_h // 2, k_w // 2]  # a view: writes go to conv
    centre[joined] = C / c_out
    if conv.bias is not None:
        conv.bias.zero_()
    return conv


class ContextModule(nn.Module):
    """Class scores ``float32 [B, C, H, W]`` to refined scores of the same shape.

    ``dilations`` are those of the 3x3 layers (each followed by a ReLU), then
    comes a 1x1 layer without ReLU. ``multipliers`` (default all 1: the basic
    module) give each 3x3 layer's output channels in units of ``C``. Every
    layer is identity-initialised (:func:`identity_init_`), so the fresh
    module returns ``relu(x)``: ``x`` itself wherever the scores are
    non-negative.
    """

    def __init__(self, channels: int, dilations=BASIC_DILATIONS,
                 multipliers=None):
        super().__init__()
        dilations = tuple(dilations)
        multipliers = tuple(multipliers or (1,) * len(dilations))
        if len(multipliers) != len(dilations):
            raise ValueError(f"{len(dilations)} dilations but {len(multipliers)} "
                             "multipliers")
        self.channels, self.dilations = channels, dilations
        layers, cin = [], channels
        for d, m in zip(dilations, multipliers):
            # padding = dilation keeps the size: the 3x3 taps span 2d + 1
            layers.append(nn.Conv2d(cin, m * channels, 3, padding=d, dilation=d))
            cin = m * channels
        self.layers = nn.ModuleList(layers)
        self.final = nn.Conv2d(cin, channels, 1)  # back to C, no truncation
        for conv in (*self.layers, self.final):
            identity_init_(conv, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if C != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {list(x.shape)}")
        for layer in self.layers:
            x = torch.relu(layer(x))  # (B, m C, H, W)
        return self.final(x)  # (B, C, H, W)


class Dilation10(nn.Module):
    """Image ``float32 [B, 3, H, W]`` in [0, 1] (normalised inside) to class
    scores ``float32 [B, num_classes, H, W]``, any ``H, W``.

    ``context=False`` gives the front end alone; ``dilations`` those of the
    context module (default Dilation10's). ``width`` scales the front end's
    channels (the context module works on the ``num_classes`` scores and does
    not scale).
    """

    def __init__(self, num_classes: int, width: float = 1.0, context: bool = True,
                 dilations=DILATION10_DILATIONS):
        super().__init__()
        imagenet_input(self, num_classes)  # checks and stores num_classes
        self.front_end = VGG16(width, output_stride=8)
        self.final = nn.Conv2d(self.front_end.fc_channels, num_classes, 1)
        nn.init.normal_(self.final.weight, 0.0, 0.001)  # as the authors' code
        nn.init.zeros_(self.final.bias)
        self.context = ContextModule(num_classes, dilations) if context else None
        self.upsample = bilinear_upsampling(num_classes, 8, trainable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        B, C, H, W = x.shape
        fc7 = self.front_end((x - self.mean) / self.std)["fc7"]  # (B, 4096w, H/8, W/8)
        score = self.final(fc7)  # (B, K, H/8, W/8)
        if self.context is not None:
            score = self.context(score)  # (B, K, H/8, W/8)
        score = self.upsample(score)  # (B, K, >=H, >=W)
        return score[:, :, :H, :W]  # (B, K, H, W)

    def torchvision_keys(self) -> dict[str, str]:
        """torchvision ``vgg16`` keys -> this model's (the front end's
        convolutions, fc6 and fc7; see :mod:`utils.models.weights`)."""
        return {tv: f"front_end.{ours}"
                for tv, ours in self.front_end.torchvision_keys().items()}

    def torchvision_ignored(self) -> tuple[str, ...]:
        return self.front_end.torchvision_ignored()

    def load_pretrained(self, path) -> None:
        """ImageNet VGG16 weights in torchvision's format into the front end
        (``final`` and the context module keep their initialisation)."""
        from utils.models.weights import load_torchvision

        load_torchvision(self, path)


def dilation_front_end(num_classes: int, **kwargs) -> Dilation10:
    """The front end alone: :class:`Dilation10` without the context module."""
    return Dilation10(num_classes, context=False, **kwargs)
