"""Mask R-CNN with a ResNet-50 FPN backbone (chapter 08).

He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017,
https://arxiv.org/abs/1703.06870

Faster R-CNN (Ren et al. 2015) with a third branch: a ResNet-50 and a feature
pyramid (:mod:`.fpn`) compute features once per image; the region proposal
network (:mod:`.rpn`) scores the anchors of every level and proposes about a
thousand boxes; for each proposal, RoIAlign pools a 7x7 feature from the
level suited to its size for the box head (:mod:`.box_head`: class and
refined box) and, for the detections, a 14x14 feature for the mask head
(:mod:`.mask_head`: a 28x28 mask per class). The input transform
(:mod:`.transform`) resizes and pads the images, and maps the detections
back to them.

Contract (torchvision's, which :mod:`utils.train.tasks` follows for the
instance task):

- input: a list of images ``float32 [3, H_i, W_i]`` in [0, 1], of any sizes
  (normalised inside with ImageNet's statistics);
- ``model.train()``; ``model(images, targets)`` with per image ``boxes float
  [N, 4]`` (x1, y1, x2, y2, pixels, ``x2 > x1``), ``labels int64 [N]`` in ``1
  .. num_classes - 1`` (0 is the background) and ``masks uint8 [N, H_i,
  W_i]`` -> a dict of five scalar losses: ``loss_classifier``,
  ``loss_box_reg``, ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``;
- ``model.eval()``; ``model(images)`` -> per image ``{"boxes": float [D,
  4], "labels": int64 [D], "scores": float [D] (best first), "masks": float
  [D, 1, H_i, W_i] in [0, 1]}`` (threshold the masks at 0.5).

Every setting is a field of :class:`MaskRCNNConfig` under torchvision's
keyword name; the defaults are torchvision's ``maskrcnn_resnet50_fpn``.
:meth:`MaskRCNNConfig.for_profile` shrinks them for small images and the
course's ``ci`` and ``cpu`` profiles. Parameter names are those of
torchvision's published COCO file (``maskrcnn_resnet50_fpn_coco-
bf2d0c1e.pth``), so :func:`utils.models.load_torchvision` loads it with a copy
loop (:func:`maskrcnn_resnet50_fpn_coco` builds the model that file
belongs to); with the same weights the model gives torchvision's detections
(``benchmarks/reference/compare_maskrcnn.py``).

Deviations from the paper: torchvision's choices, which its weights need: a
ResNet v1.5 body, per-level NMS of proposals, smooth L1 with ``beta = 1/9``,
RoIAlign with ``aligned=False``, 2x2 samples per bin and FPN level mapping
with torchvision's rounding. ``width`` (1.0 = the paper's) scales every
channel count for the course's small profiles.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from utils.models.backbones.frozen_bn import FrozenBatchNorm2d
from utils.models.backbones.resnet import ResNet
from utils.models.backbones.vgg import scaled
from utils.models.detection.anchors import AnchorGenerator
from utils.models.detection.box_head import FastRCNNPredictor, TwoMLPHead
from utils.models.detection.fpn import BackboneWithFPN
from utils.models.detection.mask_head import MaskRCNNHeads, MaskRCNNPredictor
from utils.models.detection.poolers import MultiScaleRoIAlign
from utils.models.detection.roi_heads import RoIHeads
from utils.models.detection.rpn import RegionProposalNetwork, RPNHead
from utils.models.detection.transform import GeneralizedRCNNTransform
from utils.models.weights import load_torchvision, read_state_dict

COCO_NUM_CLASSES = 91  # torchvision's COCO models: category ids 1..90, 0 background
# The predictors' keys, whose shapes depend on the number of classes.
PREDICTOR_PREFIXES = ("roi_heads.box_predictor.",
                      "roi_heads.mask_predictor.mask_fcn_logits.")
LEVELS = ("p2", "p3", "p4", "p5")  # the pyramid levels the RoI heads pool from


@dataclass(frozen=True)
class MaskRCNNConfig:
    """Every setting of :class:`MaskRCNN`; defaults are torchvision's
    ``maskrcnn_resnet50_fpn`` (names are its keyword arguments where it has
    one). Channel counts are at ``width = 1`` and scale with ``width``."""

    num_classes: int = COCO_NUM_CLASSES  # classes including the background (0)
    width: float = 1.0  # channel multiplier of backbone, FPN and heads (1 = paper)
    # Backbone
    backbone_norm: str = "batch"  # "batch" (trained) or "frozen" (FrozenBatchNorm2d)
    norm_eps: float = 1e-5  # batch norm's epsilon; torchvision's COCO file: 0.0
    trainable_backbone_layers: int = 5  # stages trained, from layer4 down (5: all)
    out_channels: int = 256  # FPN channels (x width)
    # Transform
    min_size: int | tuple[int, ...] = 800  # shorter side (tuple: drawn in training)
    max_size: int = 1333  # longer side's limit
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # ImageNet's
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    size_divisible: int = 32  # the padded batch is a multiple of this
    # RPN
    anchor_sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),) * 5  # h / w
    rpn_pre_nms_top_n_train: int = 2000  # proposals per level before NMS
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000  # proposals per image after NMS
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7  # anchors at least this IoU: objects
    rpn_bg_iou_thresh: float = 0.3  # anchors below: background
    rpn_batch_size_per_image: int = 256  # anchors sampled for the loss
    rpn_positive_fraction: float = 0.5  # at most this share of them positive
    rpn_score_thresh: float = 0.0  # proposals below this probability dropped
    # RoI heads
    box_roi_output_size: int = 7  # MultiScaleRoIAlign for the box head
    mask_roi_output_size: int = 14  # ... and for the mask head (masks 2x this)
    sampling_ratio: int = 2  # RoIAlign samples per bin along each axis
    representation_size: int = 1024  # TwoMLPHead's units (x width)
    box_score_thresh: float = 0.05  # detections need a higher probability
    box_nms_thresh: float = 0.5  # NMS per class
    box_detections_per_img: int = 100  # the best this many are kept
    box_fg_iou_thresh: float = 0.5  # proposals at least this IoU: foreground
    box_bg_iou_thresh: float = 0.5  # below: background
    box_batch_size_per_image: int = 512  # RoIs sampled per image in training
    box_positive_fraction: float = 0.25  # at most this share foreground
    bbox_reg_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)  # box coder's
    mask_layers: tuple[int, ...] = (256, 256, 256, 256)  # mask head (x width)
    mask_dilation: int = 1
    mask_dim_reduced: int = 256  # channels of the 2x2 up-convolution (x width)

    def __post_init__(self):
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background and at "
                             f"least one class), got {self.num_classes!r}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width!r}")
        if self.backbone_norm not in ("batch", "frozen"):
            raise ValueError(f"backbone_norm must be 'batch' or 'frozen', got "
                             f"{self.backbone_norm!r}")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError(f"trainable_backbone_layers must be in 0..5, got "
                             f"{self.trainable_backbone_layers}")
        if len(self.anchor_sizes) != 5 or len(self.aspect_ratios) != 5:
            raise ValueError("anchor_sizes and aspect_ratios need one tuple per "
                             "pyramid level P2..P6 (5)")
        if len({len(s) * len(r) for s, r in zip(self.anchor_sizes,
                                                  self.aspect_ratios)}) != 1:
            raise ValueError("every level needs the same number of anchors (one "
                             "RPN head serves all levels)")

    @classmethod
    def for_profile(cls, profile: str, image_size: int, **fields) -> MaskRCNNConfig:
        """Settings for images of about ``image_size`` pixels in a profile.

        - every profile: the shorter side resized to ``image_size`` (longer
          side at most ``image_size * 1333 / 800``), enlarged twice over when
          ``image_size`` is under 256 pixels (Shapes: objects of 13 pixels
          at the median become 26, as torchvision enlarges COCO's images to
          800); anchors scaled by the resized side / 256 (at most 1:
          torchvision's from 256 pixels up) and, when scaled down, a second
          size per level, a factor sqrt(2) up (``(16, 23) .. (256, 362)`` for
          64-pixel Shapes: 81 % of Shapes' objects then have an anchor at IoU
          0.7, against 18 % with ``8 .. 128`` at 64 pixels);
        - ``ci`` and ``cpu``: fewer proposals (ci 150 / 50 after NMS, cpu
          300 / 100, train / test) and RoIs (64, 128 per image) and at most
          20 detections per image (Shapes has at most 6 objects);
        - ``gpu``: torchvision's counts.

        ``fields`` override any setting.
        """
        if profile not in ("ci", "cpu", "gpu"):
            raise ValueError(f"profile must be 'ci', 'cpu' or 'gpu', got {profile!r}")
        side = image_size * (2 if image_size < 256 else 1)
        scale = min(1.0, side / 256)
        sizes = tuple(max(1, round(s[0] * scale)) for s in cls.anchor_sizes)
        settings = dict(
            min_size=side, max_size=math.ceil(side * 1333 / 800),
            anchor_sizes=tuple((s, round(s * math.sqrt(2))) if scale < 1 else (s,)
                               for s in sizes))
        if profile in ("ci", "cpu"):
            small = profile == "ci"
            settings.update(
                rpn_pre_nms_top_n_train=300 if small else 600,
                rpn_pre_nms_top_n_test=150 if small else 300,
                rpn_post_nms_top_n_train=150 if small else 300,
                rpn_post_nms_top_n_test=50 if small else 100,
                box_batch_size_per_image=64 if small else 128,
                box_detections_per_img=20,
            )
        settings.update(fields)
        return cls(**settings)

    @classmethod
    def coco(cls, **fields) -> MaskRCNNConfig:
        """The model of torchvision's published COCO file: 91 classes, the
        body's batch norms frozen with ``eps = 0`` (as torchvision sets them
        for that file), layers 2-4 trainable."""
        return cls(**{"num_classes": COCO_NUM_CLASSES, "backbone_norm": "frozen",
                      "norm_eps": 0.0, "trainable_backbone_layers": 3, **fields})


class MaskRCNN(nn.Module):
    """Mask R-CNN, ResNet-50 FPN: see the module docstring for the contract.

    ``MaskRCNN(num_classes, width=w)`` (the command line's call) builds
    torchvision's configuration with that many classes and width; ``config=``
    starts from another :class:`MaskRCNNConfig`, and keyword arguments
    replace single fields. Takes images in [0, 1] and normalises inside.
    """

    task = "instance"  # the training loop's conventions (utils.train.tasks)

    def __init__(self, num_classes: int | None = None, width: float | None = None, *,
                 config: MaskRCNNConfig | None = None, **fields):
        super().__init__()
        if num_classes is not None:
            fields["num_classes"] = num_classes
        if width is not None:
            fields["width"] = width
        cfg = dataclasses.replace(config or MaskRCNNConfig(), **fields)
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.width = cfg.width
        w = cfg.width

        norm = FrozenBatchNorm2d if cfg.backbone_norm == "frozen" else nn.BatchNorm2d
        body = ResNet(50, width=w, norm_layer=functools.partial(norm, eps=cfg.norm_eps))
        self.backbone = BackboneWithFPN(body, scaled(cfg.out_channels, w))
        _freeze_backbone_layers(body, cfg.trainable_backbone_layers)
        C = self.backbone.out_channels

        anchors = AnchorGenerator(cfg.anchor_sizes, cfg.aspect_ratios)
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(C, anchors.num_anchors_per_location()[0]),
            cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh,
            cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction,
            {"training": cfg.rpn_pre_nms_top_n_train,
             "testing": cfg.rpn_pre_nms_top_n_test},
            {"training": cfg.rpn_post_nms_top_n_train,
             "testing": cfg.rpn_post_nms_top_n_test},
            cfg.rpn_nms_thresh, score_thresh=cfg.rpn_score_thresh)

        P, rep = cfg.box_roi_output_size, scaled(cfg.representation_size, w)
        mask_layers = tuple(scaled(c, w) for c in cfg.mask_layers)
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(list(LEVELS), P, cfg.sampling_ratio),
            TwoMLPHead(C * P * P, rep), FastRCNNPredictor(rep, cfg.num_classes),
            cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh,
            cfg.box_batch_size_per_image, cfg.box_positive_fraction,
            tuple(cfg.bbox_reg_weights), cfg.box_score_thresh, cfg.box_nms_thresh,
            cfg.box_detections_per_img,
            MultiScaleRoIAlign(list(LEVELS), cfg.mask_roi_output_size,
                               cfg.sampling_ratio),
            MaskRCNNHeads(C, mask_layers, cfg.mask_dilation),
            MaskRCNNPredictor(mask_layers[-1], scaled(cfg.mask_dim_reduced, w),
                              cfg.num_classes))
        self.transform = GeneralizedRCNNTransform(cfg.min_size, cfg.max_size,
                                                  cfg.image_mean, cfg.image_std,
                                                  cfg.size_divisible)

    @classmethod
    def for_profile(cls, profile: str, image_size: int, num_classes: int,
                    width: float = 1.0, **fields) -> MaskRCNN:
        """The model for a profile and an image size
        (:meth:`MaskRCNNConfig.for_profile`); the command line builds it so."""
        return cls(config=MaskRCNNConfig.for_profile(profile, image_size,
                                                     num_classes=num_classes,
                                                     width=width, **fields))

    def forward(self, images: list[torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None):
        self._check_inputs(images, targets)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)  # {"p2": (B, C, H/4, W/4), ...}
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals,
                                                     image_list.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return self.transform.postprocess(detections, image_list.image_sizes,
                                          original_sizes)

    def _check_inputs(self, images, targets) -> None:
        """Clear errors for what torchvision would only fail on deep inside."""
        if not isinstance(images, (list, tuple)) or not images:
            raise TypeError(f"images must be a non-empty list of float [3, H, W] "
                            f"tensors, got {type(images).__name__}")
        for i, img in enumerate(images):
            if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] != 3:
                got = list(img.shape) if isinstance(img, torch.Tensor) else type(img)
                raise ValueError(f"images[{i}] must be float [3, H, W], got {got}")
        if not self.training:
            return
        if targets is None:
            raise ValueError("in training mode Mask R-CNN needs targets: "
                             "model(images, targets)")
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        for i, (img, t) in enumerate(zip(images, targets)):
            missing = [k for k in ("boxes", "labels", "masks") if k not in t]
            if missing:
                raise ValueError(f"targets[{i}] lacks {missing}; each target needs "
                                 "boxes, labels and masks")
            boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
            N = boxes.shape[0] if boxes.ndim == 2 else -1
            if boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
                raise ValueError(f"targets[{i}]['boxes'] must be float [N, 4], got "
                                 f"{boxes.dtype} {list(boxes.shape)}")
            if labels.dtype != torch.int64 or tuple(labels.shape) != (N,):
                raise ValueError(f"targets[{i}]['labels'] must be int64 [{N}], got "
                                 f"{labels.dtype} {list(labels.shape)}")
            if labels.numel() and not (
                    (labels >= 1) & (labels < self.num_classes)).all():
                raise ValueError(f"targets[{i}]['labels'] must be in 1 .. "
                                 f"{self.num_classes - 1} (0 is the background), "
                                 f"got {labels.min().item()} .. {labels.max().item()}")
            if tuple(masks.shape) != (N, *img.shape[-2:]):
                raise ValueError(f"targets[{i}]['masks'] must be [{N}, "
                                 f"{img.shape[-2]}, {img.shape[-1]}] (one mask per "
                                 f"box, the image's size), got {list(masks.shape)}")
            degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            if degenerate.any():
                k = int(torch.where(degenerate)[0][0])
                raise ValueError(f"targets[{i}]['boxes'][{k}] = "
                                 f"{boxes[k].tolist()}: boxes need x2 > x1 and "
                                 "y2 > y1")

    # Weights in torchvision's format (utils.models.weights' protocol).
    def torchvision_keys(self) -> dict[str, str]:
        """The keys of torchvision's published file -> this model's: the same
        names. The predictors are left out when the classes are not COCO's 91
        (they keep their initialisation, for fine-tuning)."""
        ignored = self.torchvision_ignored()
        return {k: k for k in self.state_dict()
                if not k.endswith("num_batches_tracked") and not k.startswith(ignored)}

    def torchvision_ignored(self) -> tuple[str, ...]:
        return () if self.num_classes == COCO_NUM_CLASSES else PREDICTOR_PREFIXES

    def load_pretrained(self, weights) -> None:
        """Load torchvision's Mask R-CNN weights (a path or a state dict), in
        the published file's names or in today's torchvision's
        (:func:`published_names`). ``--pretrained`` of the command line."""
        load_torchvision(self, published_names(read_state_dict(weights)))


def _freeze_backbone_layers(body: ResNet, trainable_layers: int) -> None:
    """torchvision's ``trainable_layers``: only the top ``trainable_layers``
    of (layer4, layer3, layer2, layer1, conv1) learn (5 also the stem's norm)."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, parameter in body.named_parameters():
        if not name.startswith(tuple(train)):
            parameter.requires_grad_(False)


# Today's torchvision wraps four kinds of convolutions in a Sequential
# (``Conv2dNormActivation``) and renames old files' keys as it loads them.
_RENAMES = (
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.(weight|bias)$"),
     lambda m: f"{m[1]}.{m[2]}"),
    (re.compile(r"^rpn\.head\.conv\.0\.0\.(weight|bias)$"),
     lambda m: f"rpn.head.conv.{m[1]}"),
    (re.compile(r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$"),
     lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.{m[2]}"),
)


def published_names(state: dict) -> dict:
    """A Mask R-CNN state dict with the key names of torchvision's published
    file: keys written by today's torchvision (``backbone.fpn.inner_blocks.0.0.
    weight``, ``rpn.head.conv.0.0.weight``, ``roi_heads.mask_head.0.0.weight``)
    renamed to the file's (``backbone.fpn.inner_blocks.0.weight``,
    ``rpn.head.conv.weight``, ``roi_heads.mask_head.mask_fcn1.weight``); other
    keys unchanged."""
    renamed = {}
    for key, value in state.items():
        for pattern, new in _RENAMES:
            match = pattern.match(key)
            if match:
                key = new(match)
                break
        renamed[key] = value
    return renamed


def maskrcnn_resnet50_fpn_coco(weights, **fields) -> MaskRCNN:
    """torchvision's ``maskrcnn_resnet50_fpn(weights="COCO_V1")`` in the course's
    code: :meth:`MaskRCNNConfig.coco` with ``weights`` (the path of
    ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``, from ``python -m
    data_scripts.weights --root data/weights --only maskrcnn_resnet50_fpn_coco``,
    or a state dict) loaded, in eval mode. ``fields`` override settings
    (``box_score_thresh=0.5``, say)."""
    model = MaskRCNN(config=MaskRCNNConfig.coco(**fields))
    model.load_pretrained(weights)
    return model.eval()
