"""Panoptic FPN: Mask R-CNN and a semantic branch on one FPN (chapter 09).

Kirillov, Girshick, He & Dollar, "Panoptic Feature Pyramid Networks", CVPR
2019, https://arxiv.org/abs/1901.02446

One ResNet-FPN computes features once per image; Mask R-CNN's RPN and RoI
heads (:mod:`utils.models.detection.mask_rcnn`) find the *things*, the
semantic branch (:mod:`.semantic_head`) classifies every pixel as one of the
*stuff* classes or as "a thing" (the paper's single "other" class for all
thing pixels, index 0 of its scores; void pixels are ignored). Training
minimises ``L = lambda_i (L_cls + L_box + L_mask + L_rpn) + lambda_s L_sem``
(``lambda_i = 1``, ``lambda_s = 0.5`` as detectron2's COCO configuration);
inference fuses the two outputs (:func:`.fusion.panoptic_fusion`).

Contract (the panoptic task of :mod:`utils.train.tasks`):

- input: a list of images ``float32 [3, H_i, W_i]`` in [0, 1];
- ``model.train()``; ``model(images, targets)``: each target holds Mask
  R-CNN's ``boxes``, ``labels`` (1..T: label ``k`` is category
  ``thing_ids[k - 1]``), ``masks`` and ``semantic int64 [H_i, W_i]`` (category
  ids, 255 = void) -> a dict of six weighted scalar losses: Mask R-CNN's five
  and ``loss_sem_seg``;
- ``model.eval()``; ``model(images)`` -> per image Mask R-CNN's detections
  (``boxes``, ``labels``, ``scores``, ``masks``), ``semantic int64 [H_i, W_i]``
  (the branch's argmax as category ids; thing pixels are 255) and ``panoptic
  int64 [H_i, W_i, 2]`` (category, instance id; void ``(255, 0)``).

Deviations from the paper: the semantic loss is computed on the scores
resized (bilinear) to each image's original size, and inference gives the
branch's scores the same way, where detectron2 compares them with the target
resized to the network's input (the two differ whenever the network
resizes the images, as its profiles enlarge small ones); group norm's groups
as in
:mod:`.semantic_head`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from utils.data import IGNORE_INDEX
from utils.models.backbones.vgg import scaled
from utils.models.detection.mask_rcnn import MaskRCNN, MaskRCNNConfig
from utils.models.panoptic.fusion import FusionConfig, panoptic_fusion
from utils.models.panoptic.semantic_head import SemanticFPNHead


@dataclass(frozen=True)
class PanopticFPNConfig:
    """Every setting of :class:`PanopticFPN`. ``detector`` holds Mask
    R-CNN's (its ``num_classes`` is set from ``thing_ids``)."""

    detector: MaskRCNNConfig = field(default_factory=MaskRCNNConfig)
    semantic_channels: int = 128  # the branch's channels (x the detector's width)
    instance_loss_weight: float = 1.0  # lambda_i
    semantic_loss_weight: float = 0.5  # lambda_s (detectron2's COCO setting)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    @classmethod
    def for_profile(cls, profile: str, image_size: int, **fields):
        """Mask R-CNN's :meth:`MaskRCNNConfig.for_profile` settings, and the
        fusion's minimum stuff area scaled from detectron2's 4096 pixels at
        800-pixel images to ``image_size`` (at least 1 pixel)."""
        detector = fields.pop("detector", {})
        area = max(1, round(4096 * (image_size / 800) ** 2))
        return cls(detector=MaskRCNNConfig.for_profile(profile, image_size,
                                                       **detector),
                   fusion=FusionConfig(stuff_min_area=area), **fields)


def _sizes_ok(thing_ids, num_classes) -> tuple[int, ...]:
    ids = tuple(int(c) for c in thing_ids)
    if not ids:
        raise ValueError("PanopticFPN needs thing_ids: the category ids of the "
                         "thing classes (Shapes: utils.data.shapes.THING_IDS)")
    if len(set(ids)) != len(ids) or not all(0 <= c < num_classes for c in ids):
        raise ValueError(f"thing_ids must be distinct ids in 0 .. {num_classes - 1}, "
                         f"got {ids}")
    if len(ids) == num_classes:
        raise ValueError("PanopticFPN needs at least one stuff class: every "
                         f"category of {num_classes} is a thing")
    return ids


class PanopticFPN(nn.Module):
    """Panoptic FPN: see the module docstring for the contract.

    ``PanopticFPN(num_classes, width=w, thing_ids=...)`` (the command line's
    call): ``num_classes`` categories in all, ``thing_ids`` those that are
    things, the rest stuff. ``config=`` starts from another
    :class:`PanopticFPNConfig`.
    """

    task = "panoptic"  # the training loop's conventions (utils.train.tasks)

    def __init__(self, num_classes: int, width: float | None = None, *,
                 thing_ids, config: PanopticFPNConfig | None = None):
        super().__init__()
        cfg = config or PanopticFPNConfig()
        self.num_classes = num_classes
        self.thing_ids = _sizes_ok(thing_ids, num_classes)
        self.stuff_ids = tuple(c for c in range(num_classes) if c not in self.thing_ids)
        widths = {} if width is None else {"width": width}
        detector = dataclasses.replace(cfg.detector,
                                       num_classes=len(self.thing_ids) + 1, **widths)
        self.config = dataclasses.replace(cfg, detector=detector)
        self.detector = MaskRCNN(config=detector)
        C = self.detector.backbone.out_channels
        # Branch classes: 0 = "a thing", 1..S = the stuff categories.
        self.semantic_head = SemanticFPNHead(
            C, len(self.stuff_ids) + 1, scaled(cfg.semantic_channels, detector.width))
        to_branch = torch.full((max(num_classes, IGNORE_INDEX + 1),), IGNORE_INDEX)
        to_branch[list(self.thing_ids)] = 0
        to_branch[list(self.stuff_ids)] = torch.arange(1, len(self.stuff_ids) + 1)
        self.register_buffer("to_branch", to_branch, persistent=False)
        from_branch = torch.tensor((IGNORE_INDEX,) + self.stuff_ids)
        self.register_buffer("from_branch", from_branch, persistent=False)
        self.register_buffer("thing_categories", torch.tensor(self.thing_ids),
                             persistent=False)

    @classmethod
    def for_profile(cls, profile: str, image_size: int, num_classes: int,
                    width: float = 1.0, *, thing_ids, **fields) -> PanopticFPN:
        """The model for a profile and image size
        (:meth:`PanopticFPNConfig.for_profile`); the command line builds it so."""
        return cls(num_classes, width, thing_ids=thing_ids,
                   config=PanopticFPNConfig.for_profile(profile, image_size, **fields))

    def forward(self, images: list[torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None):
        self._check_semantic(images, targets)
        det = self.detector
        det._check_inputs(images, targets)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        instance_targets = None if targets is None else [
            {k: t[k] for k in ("boxes", "labels", "masks")} for t in targets]
        image_list, instance_targets = det.transform(images, instance_targets)
        features = det.backbone(image_list.tensors)  # {"p2": (B, C, H/4, W/4), ...}
        proposals, rpn_losses = det.rpn(image_list, features, instance_targets)
        detections, roi_losses = det.roi_heads(features, proposals,
                                               image_list.image_sizes, instance_targets)
        scores = self.semantic_head(features)  # (B, S + 1, H_pad, W_pad)
        # Each image's scores: its unpadded part, resized back to its own size.
        per_image = [F.interpolate(scores[i:i + 1, :, :h, :w], size=size,
                                   mode="bilinear", align_corners=False)[0]
                     for i, ((h, w), size) in enumerate(zip(image_list.image_sizes,
                                                            original_sizes))]
        if self.training:
            loss_sem = torch.stack([
                F.cross_entropy(s[None], self.to_branch[t["semantic"]][None],
                                ignore_index=IGNORE_INDEX, reduction="sum")
                for s, t in zip(per_image, targets)]).sum()
            valid = sum(int((t["semantic"] != IGNORE_INDEX).sum()) for t in targets)
            loss_sem = loss_sem / max(valid, 1)  # the mean over all labelled pixels
            lam_i, lam_s = (self.config.instance_loss_weight,
                            self.config.semantic_loss_weight)
            return {**{k: lam_i * v for k, v in {**roi_losses, **rpn_losses}.items()},
                    "loss_sem_seg": lam_s * loss_sem}
        detections = det.transform.postprocess(detections, image_list.image_sizes,
                                               original_sizes)
        out = []
        for d, s in zip(detections, per_image):
            semantic = self.from_branch[s.argmax(0)]  # (H, W) category ids
            categories = self.thing_categories[d["labels"] - 1]
            panoptic = panoptic_fusion(semantic, d["masks"], d["scores"], categories,
                                       self.stuff_ids, self.config.fusion)
            out.append({**d, "semantic": semantic, "panoptic": panoptic})
        return out

    def _check_semantic(self, images, targets) -> None:
        if not self.training or targets is None:
            return
        for i, (img, t) in enumerate(zip(images, targets)):
            if "semantic" not in t:
                raise ValueError(f"targets[{i}] lacks 'semantic': Panoptic FPN's "
                                 "targets need semantic [H, W] besides boxes, labels "
                                 "and masks")
            sem = t["semantic"]
            if sem.dtype != torch.int64 or tuple(sem.shape) != tuple(img.shape[-2:]):
                raise ValueError(f"targets[{i}]['semantic'] must be int64 "
                                 f"{list(img.shape[-2:])} (the image's size), got "
                                 f"{sem.dtype} {list(sem.shape)}")
            bad = (sem != IGNORE_INDEX) & ((sem < 0) | (sem >= self.num_classes))
            if bad.any():
                raise ValueError(f"targets[{i}]['semantic'] has ids outside 0 .. "
                                 f"{self.num_classes - 1} and 255 (void): "
                                 f"{sorted(set(sem[bad].tolist()))[:5]}")
