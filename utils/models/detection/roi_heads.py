"""The RoI heads of Mask R-CNN: from proposals to classified boxes and masks
(chapter 08).

He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017,
https://arxiv.org/abs/1703.06870 (sections 3 and 3.1).

Training (per image): the ground-truth boxes are added to the proposals (so
that every object has at least one perfect RoI early on), each proposal is
matched to the ground truth (IoU ``>= 0.5`` foreground with that object's
class, ``< 0.5`` background), 512 are sampled with at most a quarter
foreground, and their targets are encoded against the proposals with
weights ``(10, 10, 5, 5)``. Features of the sampled RoIs are pooled at 7x7
from the FPN level of each RoI's size (:class:`MultiScaleRoIAlign`) for the
box head (:mod:`.box_head`) and, for the foreground RoIs only, at 14x14 for
the mask head (:mod:`.mask_head`).

Inference (per image): softmax class probabilities and class-specific boxes
for every proposal; each (proposal, class) pair other than background is a
candidate; boxes clipped to the image; candidates with probability ``<=
box_score_thresh`` (0.05) or a side under 0.01 pixel dropped; NMS at
``box_nms_thresh`` (0.5) within each class; the ``box_detections_per_img``
(100) best kept. The mask head then runs on the detections' boxes (not on
the proposals: "the mask branch is applied to the highest scoring 100
detection boxes", section 3.1), and the predicted class's mask is kept.

Semantics and names are torchvision's ``RoIHeads`` (``roi_heads.box_head``,
``.box_predictor``, ``.mask_head``, ``.mask_predictor``).

Deviations from the paper: none beyond those of the box head (its
docstring).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.detection.box_coder import BoxCoder
from utils.models.detection.box_head import FastRCNNPredictor, TwoMLPHead, fastrcnn_loss
from utils.models.detection.boxes import (
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)
from utils.models.detection.mask_head import (
    MaskRCNNHeads,
    MaskRCNNPredictor,
    maskrcnn_inference,
    maskrcnn_loss,
)
from utils.models.detection.matcher import Matcher
from utils.models.detection.nms import batched_nms
from utils.models.detection.poolers import MultiScaleRoIAlign
from utils.models.detection.sampler import BalancedPositiveNegativeSampler


class RoIHeads(nn.Module):
    """Box and mask heads on the proposals of a batch of images.

    ``forward(features, proposals, image_shapes, targets=None)`` returns
    ``(detections, losses)``: in training, no detections and the losses
    ``loss_classifier``, ``loss_box_reg`` and ``loss_mask``; in evaluation,
    per image ``{"boxes": [D, 4], "labels": int64 [D], "scores": [D],
    "masks": [D, 1, M, M]}`` (masks in their boxes' frames) and no losses.
    """

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, box_head: TwoMLPHead,
                 box_predictor: FastRCNNPredictor,
                 fg_iou_thresh: float, bg_iou_thresh: float,
                 batch_size_per_image: int, positive_fraction: float,
                 bbox_reg_weights: tuple[float, float, float, float],
                 score_thresh: float, nms_thresh: float, detections_per_img: int,
                 mask_roi_pool: MultiScaleRoIAlign, mask_head: MaskRCNNHeads,
                 mask_predictor: MaskRCNNPredictor):
        super().__init__()
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh,
                                        allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image,
                                                             positive_fraction)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.mask_roi_pool = mask_roi_pool
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        """Per image: the matched object of every proposal (``int64``, 0 where
        none) and its label (the object's class, 0 background, -1 ignored)."""
        matched_idxs, labels = [], []
        for props, boxes, classes in zip(proposals, gt_boxes, gt_labels):
            if boxes.numel() == 0:  # an image without objects: all background
                clamped = torch.zeros(props.shape[0], dtype=torch.int64,
                                      device=props.device)
                labels_in_image = torch.zeros(props.shape[0], dtype=torch.int64,
                                              device=props.device)
            else:
                matched = self.proposal_matcher(box_iou(boxes, props))
                clamped = matched.clamp(min=0)
                labels_in_image = classes[clamped].to(torch.int64)
                labels_in_image[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
                labels_in_image[matched == Matcher.BETWEEN_THRESHOLDS] = -1
            matched_idxs.append(clamped)
            labels.append(labels_in_image)
        return matched_idxs, labels

    def select_training_samples(self, proposals, targets):
        """The sampled RoIs of each image, their matched objects, labels and
        regression targets."""
        dtype, device = proposals[0].dtype, proposals[0].device
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        gt_labels = [t["labels"] for t in targets]
        # The ground truth joins the proposals: a perfect RoI for every object.
        proposals = [torch.cat((p, b)) for p, b in zip(proposals, gt_boxes)]
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, gt_boxes,
                                                                gt_labels)
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        matched_gt_boxes = []
        for i in range(len(proposals)):
            keep = torch.where(sampled_pos[i] | sampled_neg[i])[0]
            proposals[i] = proposals[i][keep]
            labels[i] = labels[i][keep]
            matched_idxs[i] = matched_idxs[i][keep]
            boxes = gt_boxes[i]
            if boxes.numel() == 0:  # something to index; all labels are 0 anyway
                boxes = torch.zeros((1, 4), dtype=dtype, device=device)
            matched_gt_boxes.append(boxes[matched_idxs[i]])
        regression_targets = self.box_coder.encode(matched_gt_boxes, proposals)
        return proposals, matched_idxs, labels, regression_targets

    def postprocess_detections(self, class_logits, box_regression, proposals,
                               image_shapes):
        """Per image: boxes ``[D, 4]``, scores ``[D]`` and labels ``[D]`` after
        the score threshold, per-class NMS and the top-``detections_per_img``."""
        device = class_logits.device
        num_classes = class_logits.shape[-1]
        boxes_per_image = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)  # (K, C, 4)
        pred_scores = F.softmax(class_logits, -1)  # (K, C)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, shape in zip(pred_boxes.split(boxes_per_image, 0),
                                        pred_scores.split(boxes_per_image, 0),
                                        image_shapes):
            boxes = clip_boxes_to_image(boxes, shape)
            labels = torch.arange(num_classes, device=device)
            labels = labels.view(1, -1).expand_as(scores)
            # Every (proposal, class) pair but the background is a candidate.
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)  # per class
            keep = keep[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]],
                targets: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            proposals, matched_idxs, labels, regression_targets = \
                self.select_training_samples(proposals, targets)

        box_features = self.box_roi_pool(features, proposals,
                                         image_shapes)  # (K, C, 7, 7)
        box_features = self.box_head(box_features)  # (K, 1024)
        class_logits, box_regression = self.box_predictor(box_features)

        result, losses = [], {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression,
                                                          labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            # The mask head trains on the foreground RoIs only.
            mask_proposals, positive_matched_idxs = [], []
            for props, lab, idxs in zip(proposals, labels, matched_idxs):
                positive = torch.where(lab > 0)[0]
                mask_proposals.append(props[positive])
                positive_matched_idxs.append(idxs[positive])
        else:
            boxes, scores, labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes)
            result = [{"boxes": b, "labels": lab, "scores": s}
                      for b, lab, s in zip(boxes, labels, scores)]
            mask_proposals = [r["boxes"] for r in result]

        mask_features = self.mask_roi_pool(features, mask_proposals, image_shapes)
        mask_features = self.mask_head(mask_features)  # (K, 256, 14, 14)
        mask_logits = self.mask_predictor(mask_features)  # (K, C, 28, 28)
        if self.training:
            losses["loss_mask"] = maskrcnn_loss(
                mask_logits, mask_proposals, [t["masks"] for t in targets],
                [t["labels"] for t in targets], positive_matched_idxs)
        else:
            probabilities = maskrcnn_inference(mask_logits,
                                               [r["labels"] for r in result])
            for p, r in zip(probabilities, result):
                r["masks"] = p  # (D, 1, 28, 28)
        return result, losses
