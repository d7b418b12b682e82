"""FCN-32s, FCN-16s and FCN-8s on a VGG16 backbone (chapter 03).

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015 / TPAMI 2017, https://arxiv.org/abs/1411.4038

VGG16 with its fully connected layers turned into convolutions scores every
class at every 32x32 block (``score_fr``). FCN-32s upsamples those coarse
scores 32x in one step. FCN-16s first upsamples them 2x and adds scores
predicted from pool4 (``score_pool4``), then upsamples 16x; FCN-8s adds a
further step with scores from pool3 (``score_pool3``) and upsamples 8x. Each
skip refines the coarse, semantic prediction with finer, more local evidence.

As in the paper, the scoring layers start at zero (so FCN-16s and FCN-8s
start out as FCN-32s), the intermediate 2x upsampling layers start as bilinear
interpolation and are learned, and the final upsampling is fixed bilinear
interpolation. The skip features are multiplied by ``pool4_scale`` and
``pool3_scale`` before scoring; the paper's "at-once" FCN-8s uses 0.01 and
0.0001 (:data:`PAPER_POOL4_SCALE`, :data:`PAPER_POOL3_SCALE`).

Deviations from the paper: "same" padding instead of padding conv1_1 by 100
(see :mod:`utils.models.backbones.vgg`), so every map stays aligned with the
input's top left corner and each crop keeps the first rows and columns (offset
0) instead of the paper's offsets 5 and 9 (skips) and 19, 27 or 31 (output);
skip scales default to 1, not 0.01 and 0.0001: those compensate for Caffe's
0..255 inputs, about 60x larger than normalised ones, and under Adam, whose
steps do not grow with the gradient, they would slow the skips' learning by the
same factor.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.models.backbones.vgg import VGG16
from utils.models.upsampling import bilinear_upsampling
from utils.models.weights import load_torchvision

# The statistics torchvision's ImageNet weights were trained with; images in
# [0, 1] are normalised with them before the backbone.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_input(model: nn.Module, num_classes: int) -> None:
    """The start of FCN's and SegNet's ``__init__`` (after ``super().__init__()``):
    ``num_classes`` checked (a positive int) and stored, and ImageNet's mean and
    std as non-persistent buffers ``mean``, ``std`` ``float32 [1, 3, 1, 1]``, so
    that the model normalises images in [0, 1] itself."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model.num_classes = num_classes
    model.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                          persistent=False)
    model.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                          persistent=False)
# "At-once" FCN-8s scales the skip features so that their scores start small
# next to fc7's (with Caffe's 0..255 inputs and SGD).
PAPER_POOL4_SCALE = 0.01
PAPER_POOL3_SCALE = 0.0001


def crop_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The top-left ``like.shape[-2:]`` window of ``x`` (the paper's ``crop``
    layer with offset 0, which "same" padding makes the right one)."""
    h, w = like.shape[-2:]
    if x.shape[-2] < h or x.shape[-1] < w:
        raise ValueError(f"cannot crop {list(x.shape)} to {h}x{w}: too small")
    return x[..., :h, :w]


class FCN(nn.Module):
    """What FCN-32s, -16s and -8s share: normalisation, VGG16 and ``score_fr``.

    Subclasses take an image ``float32 [B, 3, H, W]`` in [0, 1] (any ``H, W``)
    and return class scores ``float32 [B, num_classes, H, W]``.
    """

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        imagenet_input(self, num_classes)
        self.backbone = VGG16(width)
        self.score_fr = nn.Conv2d(self.backbone.fc_channels, num_classes, 1)
        nn.init.zeros_(self.score_fr.weight)
        nn.init.zeros_(self.score_fr.bias)

    def score_layer(self, stage: str) -> nn.Conv2d:
        """A zero-initialised 1x1 convolution scoring the classes on ``stage``."""
        layer = nn.Conv2d(self.backbone.channels[stage], self.num_classes, 1)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        return layer

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalise ``x`` and run the backbone (pool3, pool4, pool5, fc7)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected an image batch [B, 3, H, W], got {list(x.shape)}")
        return self.backbone((x - self.mean) / self.std)

    def load_pretrained(self, path) -> None:
        """Load ImageNet VGG16 weights in torchvision's format into the backbone
        (the scoring and upsampling layers keep their initialisation)."""
        load_torchvision(self, path)

    def torchvision_keys(self) -> dict[str, str]:
        """torchvision ``vgg16``'s keys -> the backbone's, prefixed (the
        protocol of :mod:`utils.models.weights`)."""
        return {tv: f"backbone.{ours}"
                for tv, ours in self.backbone.torchvision_keys().items()}

    def torchvision_ignored(self) -> tuple[str, ...]:
        return self.backbone.torchvision_ignored()


class FCN32s(FCN):
    """FCN-32s: ``score_fr`` upsampled 32x in one fixed bilinear step."""

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__(num_classes, width)
        self.upscore = bilinear_upsampling(num_classes, 32, trainable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        fc7 = self.features(x)["fc7"]  # (B, 4096w, H/32, W/32)
        score = self.score_fr(fc7)  # (B, K, H/32, W/32)
        score = self.upscore(score)  # (B, K, >=H, >=W)
        return score[:, :, :H, :W]  # (B, K, H, W)


class FCN16s(FCN):
    """FCN-16s: ``score_fr`` upsampled 2x plus ``score_pool4``, then 16x."""

    def __init__(self, num_classes: int, width: float = 1.0,
                 pool4_scale: float = 1.0):
        super().__init__(num_classes, width)
        self.pool4_scale = pool4_scale  # pool4 is multiplied by it before scoring
        self.score_pool4 = self.score_layer("pool4")
        self.upscore2 = bilinear_upsampling(num_classes, 2)
        self.upscore16 = bilinear_upsampling(num_classes, 16, trainable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        f = self.features(x)
        score = self.score_fr(f["fc7"])  # (B, K, H/32, W/32)
        upscore2 = self.upscore2(score)  # (B, K, >=H/16, >=W/16)
        pool4 = f["pool4"] * self.pool4_scale
        score_pool4 = self.score_pool4(pool4)  # (B, K, H/16, W/16)
        fuse_pool4 = score_pool4 + crop_like(upscore2, score_pool4)  # (same)
        score = self.upscore16(fuse_pool4)  # (B, K, >=H, >=W)
        return score[:, :, :H, :W]  # (B, K, H, W)


class FCN8s(FCN):
    """FCN-8s: as FCN-16s, then 2x plus ``score_pool3``, then 8x."""

    def __init__(self, num_classes: int, width: float = 1.0,
                 pool4_scale: float = 1.0, pool3_scale: float = 1.0):
        super().__init__(num_classes, width)
        self.pool4_scale = pool4_scale  # pool4 is multiplied by it before scoring
        self.pool3_scale = pool3_scale  # pool3 is multiplied by it before scoring
        self.score_pool4 = self.score_layer("pool4")
        self.score_pool3 = self.score_layer("pool3")
        self.upscore2 = bilinear_upsampling(num_classes, 2)
        self.upscore_pool4 = bilinear_upsampling(num_classes, 2)
        self.upscore8 = bilinear_upsampling(num_classes, 8, trainable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        f = self.features(x)
        score = self.score_fr(f["fc7"])  # (B, K, H/32, W/32)
        upscore2 = self.upscore2(score)  # (B, K, >=H/16, >=W/16)
        pool4 = f["pool4"] * self.pool4_scale
        score_pool4 = self.score_pool4(pool4)  # (B, K, H/16, W/16)
        fuse_pool4 = score_pool4 + crop_like(upscore2, score_pool4)  # (same)
        upscore_pool4 = self.upscore_pool4(fuse_pool4)  # (B, K, >=H/8, >=W/8)
        pool3 = f["pool3"] * self.pool3_scale
        score_pool3 = self.score_pool3(pool3)  # (B, K, H/8, W/8)
        fuse_pool3 = score_pool3 + crop_like(upscore_pool4, score_pool3)  # (same)
        score = self.upscore8(fuse_pool3)  # (B, K, >=H, >=W)
        return score[:, :, :H, :W]  # (B, K, H, W)


def init_from(finer: FCN, coarser: FCN) -> list[str]:
    """Start ``finer`` (FCN-16s or FCN-8s) from a trained ``coarser`` FCN: the
    paper's stage-wise training (FCN-32s -> FCN-16s -> FCN-8s).

    Copies every parameter and buffer that the two share by name and shape (the
    backbone, ``score_fr``, and from FCN-16s ``score_pool4`` and ``upscore2``);
    the new skip's scoring layer stays at zero and its 2x upsampling at
    bilinear, so before any training ``finer`` predicts what ``coarser`` does,
    up to the difference between one bilinear upsampling by 32 and two steps
    (2 then 16). Returns the names copied. Raises ``ValueError`` if the two have
    different numbers of classes or widths (nothing copied then).
    """
    if not isinstance(finer, FCN) or not isinstance(coarser, FCN):
        raise TypeError(f"init_from takes two FCNs, got {type(finer).__name__} "
                        f"and {type(coarser).__name__}")
    mine, theirs = finer.state_dict(), coarser.state_dict()
    for name in ("score_fr.weight", "backbone.fc7.weight"):
        if mine[name].shape != theirs[name].shape:
            raise ValueError(
                f"init_from needs the same classes and width: {name} is "
                f"{list(theirs[name].shape)} in the {type(coarser).__name__}, "
                f"{list(mine[name].shape)} in the {type(finer).__name__}")
    copied = [name for name, value in theirs.items()
              if name in mine and mine[name].shape == value.shape]
    finer.load_state_dict({**mine, **{name: theirs[name] for name in copied}})
    return copied
