"""Canonical models and the registry behind ``python -m utils.train --model NAME``.

Every model chapter builds its model in the notebook and keeps the canonical
copy here; a test pins the two together. Each registry entry is a class (or a
function) called as ``Model(num_classes, width=...)``; add a line when a chapter
adds a model.
"""

from __future__ import annotations

import functools

from torch import nn

from utils.models.backbones.frozen_bn import FrozenBatchNorm2d
from utils.models.backbones.resnet import ResNet, resnet50, resnet101
from utils.models.backbones.vgg import VGG16
from utils.models.fcn import FCN8s, FCN16s, FCN32s
from utils.models.patch_cnn import PatchCNN
from utils.models.segnet import SegNet
from utils.models.tiny_fcn import TinyFCN
from utils.models.unet import UNet
from utils.models.weights import load_torchvision

MODELS = {
    "tiny_fcn": TinyFCN,  # chapter 00
    "patch_cnn": PatchCNN,  # chapter 02 (dense: stride-4 scores interpolated)
    "fcn32s": FCN32s,  # chapter 03
    "fcn16s": FCN16s,  # chapter 03
    "fcn8s": FCN8s,  # chapter 03
    # chapter 04; "same" padding, so that the output has the input's size
    "unet": functools.partial(UNet, padding="same"),
    "segnet": SegNet,  # chapter 05
}

__all__ = [
    "MODELS",
    "VGG16",
    "ResNet",
    "resnet50",
    "resnet101",
    "FrozenBatchNorm2d",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "PatchCNN",
    "SegNet",
    "TinyFCN",
    "UNet",
    "build_model",
    "load_torchvision",
]


def build_model(name: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """Build registered model ``name`` for ``num_classes`` classes."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](num_classes, width=width)
