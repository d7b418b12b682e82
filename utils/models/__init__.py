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
from utils.models.detection.mask_rcnn import MaskRCNN
from utils.models.fcn import FCN8s, FCN16s, FCN32s
from utils.models.panoptic import PanopticFPN, SemanticFPN
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
    "maskrcnn": MaskRCNN,  # chapter 08 (instance; sized by for_profile)
    "semantic_fpn": SemanticFPN,  # chapter 09 (the semantic branch on its own)
    "panoptic_fpn": PanopticFPN,  # chapter 09 (panoptic; sized by for_profile)
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
    "MaskRCNN",
    "PanopticFPN",
    "SemanticFPN",
    "PatchCNN",
    "SegNet",
    "TinyFCN",
    "UNet",
    "build_model",
    "load_torchvision",
]


def build_model(name: str, num_classes: int, width: float = 1.0, *,
                profile: str | None = None, image_size: int | None = None,
                **options) -> nn.Module:
    """Build registered model ``name`` for ``num_classes`` classes.

    A model that sizes itself to its images (Mask R-CNN: the resize, anchors
    and proposal counts) has a classmethod ``for_profile(profile, image_size,
    num_classes, width=...)``; given ``profile`` and ``image_size`` (the command
    line gives both), the model is built through it.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    model = MODELS[name]
    if profile is not None and image_size is not None and hasattr(model,
                                                                  "for_profile"):
        return model.for_profile(profile, image_size, num_classes, width=width,
                                 **options)
    return model(num_classes, width=width, **options)
