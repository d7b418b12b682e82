"""The box head of Fast/Faster/Mask R-CNN: classify each RoI and refine its box
(chapter 08).

Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083
(section 2); with the FPN's light head, Lin et al., CVPR 2017
(https://arxiv.org/abs/1612.03144, section 4.2): two fully connected layers
of 1024 units (``fc6``, ``fc7``, each with a ReLU) on the RoI's 7x7 pooled
features, then two siblings: ``cls_score`` gives ``K`` class logits
(background is class 0) and ``bbox_pred`` gives ``4K`` box deltas, one set
of ``(dx, dy, dw, dh)`` per class, so each class refines the box in its own
way (class-specific regression).

The loss (:func:`fastrcnn_loss`): cross-entropy over all sampled RoIs, plus
smooth L1 (``beta = 1/9``) between the deltas *of the true class* and the
encoded ground truth, over the positive RoIs, summed and divided by the
number of sampled RoIs.

Semantics and parameter names are torchvision's ``TwoMLPHead`` and
``FastRCNNPredictor`` (``roi_heads.box_head.fc6``, ``.fc7``,
``roi_heads.box_predictor.cls_score``, ``.bbox_pred``) and its
``fastrcnn_loss``.

Deviations from the paper: smooth L1 with ``beta = 1/9`` (Detectron's) rather
than 1, and the box loss divided by all sampled RoIs rather than by the
positives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TwoMLPHead(nn.Module):
    """Pooled RoI features ``[K, C, 7, 7]`` -> ``[K, representation_size]``."""

    def __init__(self, in_channels: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=1)  # (K, C*7*7)
        x = F.relu(self.fc6(x))  # (K, 1024)
        return F.relu(self.fc7(x))  # (K, 1024)


class FastRCNNPredictor(nn.Module):
    """``[K, representation_size]`` -> class logits ``[K, num_classes]`` and
    class-specific box deltas ``[K, 4 * num_classes]``."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)  # (K, K_cls), (K, 4 K_cls)


def fastrcnn_loss(class_logits: torch.Tensor, box_regression: torch.Tensor,
                  labels: list[torch.Tensor], regression_targets: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_classifier`` and ``loss_box_reg`` of the sampled RoIs.

    Args:
        class_logits: ``[K, C]``; box_regression: ``[K, 4C]``.
        labels: per image ``int64 [K_i]`` in ``0 .. C-1`` (0 = background).
        regression_targets: per image ``[K_i, 4]``, the encoded ground truth.
    """
    labels = torch.cat(labels, dim=0)  # (K,)
    regression_targets = torch.cat(regression_targets, dim=0)  # (K, 4)
    classification_loss = F.cross_entropy(class_logits, labels)
    # Only the positives regress, and only with their true class's deltas.
    positive = torch.where(labels > 0)[0]
    labels_pos = labels[positive]
    K, C = class_logits.shape
    box_regression = box_regression.reshape(K, box_regression.size(-1) // 4, 4)
    box_loss = F.smooth_l1_loss(box_regression[positive, labels_pos],
                                regression_targets[positive], beta=1 / 9,
                                reduction="sum")
    return classification_loss, box_loss / labels.numel()
