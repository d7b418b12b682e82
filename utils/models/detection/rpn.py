"""The Region Proposal Network (chapter 08).

Ren, He, Girshick & Sun, "Faster R-CNN: Towards Real-Time Object Detection with
Region Proposal Networks", NeurIPS 2015, https://arxiv.org/abs/1506.01497
(section 3.1); on a feature pyramid as in Lin et al., "Feature Pyramid Networks
for Object Detection", CVPR 2017 (section 4.1).

A small network slides over every pyramid level: a shared 3x3 convolution
and ReLU, then two sibling 1x1 convolutions give, for each of the ``A``
anchors at each position, an **objectness** logit (object or not) and four
**box deltas** ``(dx, dy, dw, dh)`` that refine the anchor. Proposals are the
decoded anchors, filtered per image: the ``pre_nms_top_n`` best per level,
clipped to the image, boxes smaller than ``1e-3`` pixels removed, NMS at
``nms_thresh`` within each level, and the ``post_nms_top_n`` best kept.

Training: anchors are matched to the ground truth (:class:`Matcher`: IoU
``>= 0.7`` positive, ``< 0.3`` negative, and each object's best anchors
positive whatever their IoU), 256 are sampled per image with at most half
positives, and the losses are binary cross-entropy on objectness and smooth
L1 (``beta = 1/9``) on the positives' deltas, summed and divided by the
number of sampled anchors. Proposals are detached: the RoI heads' losses do
not flow into the RPN through the boxes.

Semantics are torchvision's ``RPNHead`` and ``RegionProposalNetwork`` (the
parameter names ``rpn.head.conv``, ``rpn.head.cls_logits`` and
``rpn.head.bbox_pred`` of its published Mask R-CNN file; the order of
anchors and deltas, the per-level top-k and NMS, the losses).

Deviations from the paper: proposals are taken per level before NMS and NMS
is per level (torchvision's and Detectron's FPN practice); the box loss is
normalised by the sampled anchors, not by the number of anchor positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.detection.anchors import AnchorGenerator
from utils.models.detection.box_coder import BoxCoder
from utils.models.detection.boxes import (
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)
from utils.models.detection.image_list import ImageList
from utils.models.detection.matcher import Matcher
from utils.models.detection.nms import batched_nms
from utils.models.detection.sampler import BalancedPositiveNegativeSampler


class RPNHead(nn.Module):
    """Per level ``[B, C, H, W]`` -> objectness ``[B, A, H, W]`` and box deltas
    ``[B, 4A, H, W]`` (channel ``4a + j`` is delta ``j`` of anchor ``a``)."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for feature in features:  # the same head on every level
            t = F.relu(self.conv(feature))  # (B, C, H, W)
            logits.append(self.cls_logits(t))  # (B, A, H, W)
            deltas.append(self.bbox_pred(t))  # (B, 4A, H, W)
        return logits, deltas


def flatten_predictions(logits: list[torch.Tensor], deltas: list[torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level head outputs to one row per anchor, in the anchor generator's
    order (level, then y, x, then anchor): objectness ``[B * sum_l H_l W_l A,
    1]`` and deltas ``[B * sum_l H_l W_l A, 4]``."""
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas):
        B, A, H, W = lg.shape
        flat_logits.append(lg.view(B, A, 1, H, W).permute(0, 3, 4, 1, 2)
                           .reshape(B, -1, 1))  # (B, H*W*A, 1)
        flat_deltas.append(dl.view(B, A, 4, H, W).permute(0, 3, 4, 1, 2)
                           .reshape(B, -1, 4))  # (B, H*W*A, 4)
    return (torch.cat(flat_logits, dim=1).flatten(0, -2),
            torch.cat(flat_deltas, dim=1).reshape(-1, 4))


class RegionProposalNetwork(nn.Module):
    """Proposals ``[Tensor[P_i, 4]]`` (and, in training, the two RPN losses)
    for a batch of images.

    Args:
        anchor_generator, head: the anchors and the :class:`RPNHead`.
        fg_iou_thresh, bg_iou_thresh: the matcher's thresholds (0.7, 0.3).
        batch_size_per_image, positive_fraction: the sampler's (256, 0.5).
        pre_nms_top_n, post_nms_top_n: ``{"training": n, "testing": n}``:
            proposals kept per level before NMS, and per image after it.
        nms_thresh: NMS IoU threshold (0.7).
        score_thresh: proposals with a lower objectness probability are
            dropped (0: none).
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: RPNHead,
                 fg_iou_thresh: float, bg_iou_thresh: float,
                 batch_size_per_image: int, positive_fraction: float,
                 pre_nms_top_n: dict[str, int], post_nms_top_n: dict[str, int],
                 nms_thresh: float, score_thresh: float = 0.0):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh,
                                        allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image,
                                                             positive_fraction)
        self._pre_nms_top_n = pre_nms_top_n
        self._post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = 1e-3  # proposals narrower than this (pixels) are dropped

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def assign_targets_to_anchors(self, anchors: list[torch.Tensor],
                                  targets: list[dict[str, torch.Tensor]]
                                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: labels ``float [A_total]`` (1 object, 0 background, -1
        ignored) and the matched ground-truth box of every anchor ``[A_total,
        4]`` (meaningful for the positives only)."""
        labels, matched_gt_boxes = [], []
        for anchors_per_image, target in zip(anchors, targets):
            gt_boxes = target["boxes"]
            if gt_boxes.numel() == 0:  # an image without objects: all background
                matched = torch.zeros_like(anchors_per_image, dtype=torch.float32)
                labels_per_image = torch.zeros(anchors_per_image.shape[0],
                                               dtype=torch.float32,
                                               device=anchors_per_image.device)
            else:
                matched_idxs = self.proposal_matcher(box_iou(gt_boxes,
                                                             anchors_per_image))
                # -1 and -2 are not indices: clamp, then label them below.
                matched = gt_boxes[matched_idxs.clamp(min=0)]
                labels_per_image = (matched_idxs >= 0).to(torch.float32)
                labels_per_image[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0.0
                labels_per_image[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(labels_per_image)
            matched_gt_boxes.append(matched)
        return labels, matched_gt_boxes

    def _top_n_per_level(self, objectness: torch.Tensor,
                         num_anchors_per_level: list[int]) -> torch.Tensor:
        """Indices ``[B, sum_l min(n, A_l)]`` of the best anchors of each level."""
        result, offset = [], 0
        for ob in objectness.split(num_anchors_per_level, dim=1):
            k = min(self.pre_nms_top_n(), ob.shape[1])
            _, top = ob.topk(k, dim=1)
            result.append(top + offset)
            offset += ob.shape[1]
        return torch.cat(result, dim=1)

    def filter_proposals(self, proposals: torch.Tensor, objectness: torch.Tensor,
                         image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image, proposals ``[P_i, 4]`` and their objectness probabilities
        ``[P_i]``, best first, from all decoded anchors ``[B, A_total, 4]``."""
        B = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach().reshape(B, -1)  # (B, A_total)
        levels = torch.cat([torch.full((n,), k, dtype=torch.int64, device=device)
                            for k, n in enumerate(num_anchors_per_level)])
        levels = levels.reshape(1, -1).expand_as(objectness)

        top_n = self._top_n_per_level(objectness, num_anchors_per_level)
        batch = torch.arange(B, device=device)[:, None]
        objectness = objectness[batch, top_n]
        levels = levels[batch, top_n]
        proposals = proposals[batch, top_n]
        probabilities = torch.sigmoid(objectness)

        final_boxes, final_scores = [], []
        for boxes, scores, lvl, shape in zip(proposals, probabilities, levels,
                                             image_shapes):
            boxes = clip_boxes_to_image(boxes, shape)
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)  # per level
            keep = keep[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def compute_loss(self, objectness: torch.Tensor, pred_bbox_deltas: torch.Tensor,
                     labels: list[torch.Tensor], regression_targets: list[torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss_objectness`` (binary cross-entropy over the sampled anchors)
        and ``loss_rpn_box_reg`` (smooth L1 over the sampled positives, divided
        by the number of sampled anchors)."""
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        sampled_pos = torch.where(torch.cat(sampled_pos, dim=0))[0]
        sampled_neg = torch.where(torch.cat(sampled_neg, dim=0))[0]
        sampled = torch.cat([sampled_pos, sampled_neg], dim=0)
        objectness = objectness.flatten()
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        box_loss = F.smooth_l1_loss(pred_bbox_deltas[sampled_pos],
                                    regression_targets[sampled_pos],
                                    beta=1 / 9, reduction="sum") / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled],
                                                             labels[sampled])
        return objectness_loss, box_loss

    def forward(self, images: ImageList, features: dict[str, torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        features = list(features.values())  # every level, P6 included
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(images, features)  # [(A_total, 4)] per image
        B = len(anchors)
        num_anchors_per_level = [lg[0].numel() for lg in logits]  # A * H_l * W_l
        objectness, pred_bbox_deltas = flatten_predictions(logits, deltas)
        # Faster R-CNN does not backpropagate through the proposals' boxes.
        proposals = self.box_coder.decode(pred_bbox_deltas.detach(), anchors)
        proposals = proposals.view(B, -1, 4)  # (B, A_total, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes,
                                         num_anchors_per_level)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
            loss_objectness, loss_rpn_box_reg = self.compute_loss(
                objectness, pred_bbox_deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness,
                      "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses
