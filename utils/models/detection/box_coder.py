"""Box coding: a box as offsets from a reference box, the target of the
regression heads (chapter 08).

Girshick, Donahue, Darrell & Malik, "Rich feature hierarchies...", CVPR 2014
(R-CNN, appendix C), as used by Faster R-CNN (Ren et al. 2015,
https://arxiv.org/abs/1506.01497, equation 2).

A box with centre ``(x, y)`` and size ``(w, h)`` relative to a reference box
(an anchor or a proposal) ``(x_a, y_a, w_a, h_a)``:

    dx = wx * (x - x_a) / w_a      dy = wy * (y - y_a) / h_a
    dw = ww * log(w / w_a)         dh = wh * log(h / h_a)

Offsets are relative to the reference's size, so one regressor serves small
and large boxes alike; ``log`` makes scaling symmetric. The weights rescale the
targets to about unit variance: torchvision's Faster/Mask R-CNN use
``(1, 1, 1, 1)`` for the RPN and ``(10, 10, 5, 5)`` for the box head.

Semantics are torchvision's ``BoxCoder``: width ``x2 - x1`` (no +1), centre
``x1 + 0.5 * w``; decoding clamps ``dw`` and ``dh`` at ``log(1000 / 16)`` before
``exp`` (a box at most 62.5 times its reference: an untrained head cannot
overflow), and the same operations in the same order, so that decoded boxes
match torchvision's bit for bit.
"""

from __future__ import annotations

import math

import torch


def encode_boxes(reference_boxes: torch.Tensor, proposals: torch.Tensor,
                 weights: torch.Tensor) -> torch.Tensor:
    """Offsets ``[N, 4]`` ``(dx, dy, dw, dh)`` of ``reference_boxes`` (the
    targets, e.g. ground truth) relative to ``proposals`` (the references, e.g.
    anchors), both ``float [N, 4]`` ``(x1, y1, x2, y2)``; ``weights``: ``[4]``."""
    wx, wy, ww, wh = weights
    ex_widths = proposals[:, 2:3] - proposals[:, 0:1]  # (N, 1)
    ex_heights = proposals[:, 3:4] - proposals[:, 1:2]
    ex_ctr_x = proposals[:, 0:1] + 0.5 * ex_widths
    ex_ctr_y = proposals[:, 1:2] + 0.5 * ex_heights

    gt_widths = reference_boxes[:, 2:3] - reference_boxes[:, 0:1]
    gt_heights = reference_boxes[:, 3:4] - reference_boxes[:, 1:2]
    gt_ctr_x = reference_boxes[:, 0:1] + 0.5 * gt_widths
    gt_ctr_y = reference_boxes[:, 1:2] + 0.5 * gt_heights

    targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
    targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
    targets_dw = ww * torch.log(gt_widths / ex_widths)
    targets_dh = wh * torch.log(gt_heights / ex_heights)
    return torch.cat((targets_dx, targets_dy, targets_dw, targets_dh), dim=1)  # (N, 4)


class BoxCoder:
    """Encode boxes as offsets from references and decode them back.

    Args:
        weights: ``(wx, wy, ww, wh)``.
        bbox_xform_clip: the largest ``dw``, ``dh`` fed to ``exp`` when decoding.
    """

    def __init__(self, weights: tuple[float, float, float, float],
                 bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4:
            raise ValueError(f"weights must be (wx, wy, ww, wh), got {weights}")
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: list[torch.Tensor],
               proposals: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Per image, ``encode_single``: a tuple of ``[L_i, 4]``."""
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(reference_boxes, dim=0),
                                     torch.cat(proposals, dim=0))
        return targets.split(boxes_per_image, 0)

    def encode_single(self, reference_boxes: torch.Tensor,
                      proposals: torch.Tensor) -> torch.Tensor:
        """Offsets ``[N, 4]`` of ``reference_boxes`` relative to ``proposals``."""
        weights = torch.as_tensor(self.weights, dtype=reference_boxes.dtype,
                                  device=reference_boxes.device)
        return encode_boxes(reference_boxes, proposals, weights)

    def decode(self, rel_codes: torch.Tensor,
               boxes: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``rel_codes [sum L_i, 4 * C]`` against per-image references
        ``[Tensor[L_i, 4]]``: ``[sum L_i, C, 4]`` (one box per class ``C``)."""
        if not isinstance(boxes, (list, tuple)):
            raise TypeError("boxes must be a list of per-image tensors [L_i, 4]")
        box_sum = sum(b.shape[0] for b in boxes)
        if box_sum > 0:
            rel_codes = rel_codes.reshape(box_sum, -1)
        pred_boxes = self.decode_single(rel_codes, torch.cat(boxes, dim=0))
        if box_sum > 0:
            pred_boxes = pred_boxes.reshape(box_sum, -1, 4)
        return pred_boxes

    def decode_single(self, rel_codes: torch.Tensor,
                      boxes: torch.Tensor) -> torch.Tensor:
        """Boxes ``[N, 4 * C]`` from offsets ``rel_codes [N, 4 * C]`` (``C`` groups
        of ``(dx, dy, dw, dh)``) and references ``boxes [N, 4]``."""
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx  # (N, C)
        dy = rel_codes[:, 1::4] / wy
        dw = rel_codes[:, 2::4] / ww
        dh = rel_codes[:, 3::4] / wh
        # Prevent sending too large values into exp().
        dw = torch.clamp(dw, max=self.bbox_xform_clip)
        dh = torch.clamp(dh, max=self.bbox_xform_clip)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        # Half sizes through a 0-d tensor, as torchvision (same rounding).
        half = torch.tensor(0.5, dtype=pred_ctr_x.dtype, device=pred_w.device)
        half_w = half * pred_w
        half_h = half * pred_h
        pred_boxes = torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h,
                                  pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2)
        return pred_boxes.flatten(1)  # (N, 4 * C)
