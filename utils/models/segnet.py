"""SegNet: an encoder-decoder that upsamples with the encoder's pooling indices
(chapter 05).

Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation", TPAMI 2017,
https://arxiv.org/abs/1511.00561

The encoder is VGG16's thirteen 3x3 convolutions, each with batch norm and
ReLU (torchvision's ``vgg16_bn`` without its fully connected layers), whose
five 2x2 max-pools remember *where* each maximum was. The decoder mirrors it:
each stage first **unpools**, putting every value back at its maximum's
position and zeros elsewhere (a sparse map of the size the stage had before
pooling), then densifies it with 3x3 convolutions (batch norm, ReLU). The
last convolution scores the classes. Where U-Net and FCN keep the encoder's
feature maps for their decoders (floats, many channels), SegNet keeps only the
indices: a 2-bit choice among four positions per pooled value.

Takes images in [0, 1] and normalises them with ImageNet's statistics inside
(the encoder loads torchvision's ``vgg16_bn`` ImageNet weights with
:meth:`SegNet.load_pretrained`); returns scores of the input's size for any
size (the pools round up, and each unpooling restores its stage's size).

Deviations from the paper: none in the layers. The pools round up, as Caffe's
do; where the authors' Caffe model writes the size of an odd-sided unpooled
map into its configuration (45x60 for CamVid's 360x480 images), this one takes
it from the encoder, so any input size works. The final 3x3 convolution has a
bias and no batch norm, as in the authors' ``segnet_train.prototxt``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from utils.models.backbones.vgg import VGG16, scaled
from utils.models.fcn import imagenet_input
from utils.models.weights import load_torchvision

# Decoder stage n (5 down to 1): the output channels of its convolutions at
# width 1; the last of stage 1 scores the classes instead.
DECODER_CHANNELS = {
    5: (512, 512, 512),
    4: (512, 512, 256),
    3: (256, 256, 128),
    2: (128, 64),
    1: (64,),
}


def max_unpool(x: torch.Tensor, indices: torch.Tensor, output_size) -> torch.Tensor:
    """Max unpooling: ``x [B, C, h, w]`` written at ``indices`` (same shape,
    ``int64`` flat positions ``row * W + column`` in the ``[H, W] = output_size``
    map, as ``MaxPool2d(return_indices=True)`` gives them), zeros elsewhere.

    Equal to ``F.max_unpool2d(x, indices, kernel, output_size=output_size)``
    for non-overlapping windows. The output size has to be given: a ceil-mode
    pooling of an odd side (5 -> 3) or a floor-mode one (5 -> 2) cannot be
    told from an even side (6 -> 3, 4 -> 2) by the pooled map alone, and flat
    indices mean another pixel in a map of another width.
    """
    if x.shape != indices.shape or indices.dtype != torch.int64:
        raise ValueError(f"indices must be int64 of x's shape {list(x.shape)}, got "
                         f"{indices.dtype} {list(indices.shape)}")
    B, C, h, w = x.shape
    H, W = output_size
    if h * w and (indices.min() < 0 or indices.max() >= H * W):
        raise ValueError(f"indices outside a {H}x{W} map: is output_size the size "
                         f"of the pooling's input?")
    out = x.new_zeros(B, C, H * W)
    out.scatter_(2, indices.reshape(B, C, h * w), x.reshape(B, C, h * w))
    return out.view(B, C, H, W)


def decoder_stage(cin: int, channels, num_classes: int | None) -> nn.Sequential:
    """3x3 convolutions (batch norm, ReLU) to ``channels``; with
    ``num_classes`` a final plain 3x3 convolution scores the classes."""
    layers, c = OrderedDict(), cin
    for k, cout in enumerate(channels, start=1):
        layers[f"conv{k}"] = nn.Conv2d(c, cout, 3, padding=1)
        layers[f"bn{k}"] = nn.BatchNorm2d(cout)
        layers[f"relu{k}"] = nn.ReLU(inplace=True)
        c = cout
    if num_classes is not None:
        layers["classifier"] = nn.Conv2d(c, num_classes, 3, padding=1)
    return nn.Sequential(layers)


class SegNet(nn.Module):
    """Image ``float32 [B, 3, H, W]`` in [0, 1] to scores ``[B, num_classes,
    H, W]``, any ``H, W``. ``width`` multiplies every channel count (1.0 = the
    paper's)."""

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        imagenet_input(self, num_classes)
        self.encoder = VGG16(width, batch_norm=True, classifier=False)
        stage_in = {n: self.encoder.channels[f"conv{n}"] for n in range(1, 6)}
        self.decoder5 = decoder_stage(stage_in[5], _scaled(5, width), None)
        self.decoder4 = decoder_stage(stage_in[4], _scaled(4, width), None)
        self.decoder3 = decoder_stage(stage_in[3], _scaled(3, width), None)
        self.decoder2 = decoder_stage(stage_in[2], _scaled(2, width), None)
        self.decoder1 = decoder_stage(stage_in[1], _scaled(1, width), num_classes)
        for decoder in (self.decoder5, self.decoder4, self.decoder3, self.decoder2,
                        self.decoder1):  # the encoder initialises itself
            for m in decoder.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in",
                                            nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch [B, 3, H, W], got "
                             f"{list(x.shape)}")
        B, C, H, W = x.shape
        f = self.encoder((x - self.mean) / self.std, return_indices=True)
        x = f["pool5"]  # (B, 512w, H/32, W/32)
        x = self.decoder5(self.unpool(x, f, 5))  # (B, 512w, H/16, W/16)
        x = self.decoder4(self.unpool(x, f, 4))  # (B, 256w, H/8, W/8)
        x = self.decoder3(self.unpool(x, f, 3))  # (B, 128w, H/4, W/4)
        x = self.decoder2(self.unpool(x, f, 2))  # (B, 64w, H/2, W/2)
        return self.decoder1(self.unpool(x, f, 1))  # (B, K, H, W)

    @staticmethod
    def unpool(x: torch.Tensor, f: dict, n: int) -> torch.Tensor:
        """Unpool ``x`` with pool ``n``'s indices to stage ``n``'s size."""
        return max_unpool(x, f[f"indices{n}"], f[f"conv{n}"].shape[-2:])

    def torchvision_keys(self) -> dict[str, str]:
        """torchvision ``vgg16_bn`` keys -> this model's (the encoder's); see
        :mod:`utils.models.weights`."""
        return {tv: f"encoder.{ours}"
                for tv, ours in self.encoder.torchvision_keys().items()}

    def torchvision_ignored(self) -> tuple[str, ...]:
        return self.encoder.torchvision_ignored()

    def load_pretrained(self, path) -> None:
        """Load torchvision's ImageNet ``vgg16_bn`` weights into the encoder (the
        decoder keeps its initialisation)."""
        load_torchvision(self, path)


def _scaled(stage: int, width: float) -> tuple[int, ...]:
    return tuple(scaled(c, width) for c in DECODER_CHANNELS[stage])
