"""The mask head of Mask R-CNN: a small FCN on each RoI (chapter 08).

He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017,
https://arxiv.org/abs/1703.06870 (section 3 and figure 4, right).

On each RoI's 14x14 pooled features, four 3x3 convolutions of 256 channels
(``mask_fcn1`` .. ``mask_fcn4``, each with a ReLU), a 2x2 transposed
convolution of stride 2 (``conv5_mask``, to 28x28, with a ReLU) and a 1x1
convolution (``mask_fcn_logits``) give ``K`` mask logits per pixel: one
28x28 mask **per class**. The loss (:func:`maskrcnn_loss`) is the per-pixel
binary cross-entropy of the mask of the RoI's *ground-truth* class only, so
the classes do not compete for a pixel (no softmax across classes): the box
head decides the class, the mask head only the shape. The paper measures
this decoupling as worth 5.5 mask AP over a per-pixel softmax (table 2b).

The target of a RoI is its matched object's mask cut out by the RoI and
resampled to 28x28 with RoIAlign (:func:`project_masks_on_boxes`); at
inference the mask of the predicted class is taken and its sigmoid pasted
into the image (:func:`utils.models.detection.masks.paste_masks_in_image`).

Semantics and parameter names are torchvision's ``MaskRCNNHeads`` and
``MaskRCNNPredictor`` as saved in its published Mask R-CNN file
(``roi_heads.mask_head.mask_fcn1`` .. ``4``, ``roi_heads.mask_predictor.
conv5_mask``, ``.mask_fcn_logits``), with their initialisation (Kaiming
normal, fan-out; zero biases in the head, PyTorch's default biases in the
predictor), and its ``project_masks_on_boxes``, ``maskrcnn_loss`` and
``maskrcnn_inference``.

Deviations from the paper: none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.detection.roi_align import roi_align


class MaskRCNNHeads(nn.Module):
    """``[K, C, 14, 14]`` -> ``[K, layers[-1], 14, 14]``: 3x3 convolutions
    (``mask_fcn1``, ...), each followed by a ReLU."""

    def __init__(self, in_channels: int, layers: tuple[int, ...], dilation: int = 1):
        super().__init__()
        self.num_layers = len(layers)
        cin = in_channels
        for k, cout in enumerate(layers, start=1):
            conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            setattr(self, f"mask_fcn{k}", conv)
            cin = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(1, self.num_layers + 1):
            x = F.relu(getattr(self, f"mask_fcn{k}")(x))  # (K, 256, 14, 14)
        return x


class MaskRCNNPredictor(nn.Module):
    """``[K, C, 14, 14]`` -> mask logits ``[K, num_classes, 28, 28]``."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv5_mask(x))  # (K, 256, 28, 28)
        return self.mask_fcn_logits(x)  # (K, num_classes, 28, 28)


def project_masks_on_boxes(gt_masks: torch.Tensor, boxes: torch.Tensor,
                           matched_idxs: torch.Tensor, M: int) -> torch.Tensor:
    """The mask targets of one image's RoIs: ``float [K, M, M]`` in [0, 1].

    Row ``k`` is ground-truth mask ``matched_idxs[k]`` (of ``gt_masks``, ``[N,
    H, W]``, in the resized image's pixels) seen through RoI ``boxes[k]`` and
    resampled to ``M x M`` by RoIAlign. The trick: the masks are a "batch" of
    one-channel maps, and the matched index is each RoI's batch index.
    """
    matched_idxs = matched_idxs.to(boxes)
    rois = torch.cat([matched_idxs[:, None], boxes], dim=1)  # (K, 5)
    gt_masks = gt_masks[:, None].to(rois)  # (N, 1, H, W)
    return roi_align(gt_masks, rois, (M, M), 1.0)[:, 0]  # (K, M, M)


def maskrcnn_loss(mask_logits: torch.Tensor, proposals: list[torch.Tensor],
                  gt_masks: list[torch.Tensor], gt_labels: list[torch.Tensor],
                  mask_matched_idxs: list[torch.Tensor]) -> torch.Tensor:
    """``loss_mask``: mean binary cross-entropy between the logits of each
    positive RoI's ground-truth class and its mask target.

    Args:
        mask_logits: ``[K, num_classes, M, M]`` for the positive RoIs of all
            images, in order.
        proposals: per image, the positive RoIs ``[K_i, 4]``.
        gt_masks: per image ``uint8 [N_i, H, W]``; gt_labels: ``int64 [N_i]``.
        mask_matched_idxs: per image ``int64 [K_i]``, each RoI's object.
    """
    M = mask_logits.shape[-1]
    labels = [lab[idxs] for lab, idxs in zip(gt_labels, mask_matched_idxs)]
    mask_targets = [project_masks_on_boxes(m, p, i, M)
                    for m, p, i in zip(gt_masks, proposals, mask_matched_idxs)]
    labels = torch.cat(labels, dim=0)  # (K,)
    mask_targets = torch.cat(mask_targets, dim=0)  # (K, M, M)
    if mask_targets.numel() == 0:  # no positive RoI: a zero that keeps the graph
        return mask_logits.sum() * 0
    own_class = mask_logits[torch.arange(labels.shape[0], device=labels.device),
                            labels]  # (K, M, M)
    return F.binary_cross_entropy_with_logits(own_class, mask_targets)


def maskrcnn_inference(mask_logits: torch.Tensor, labels: list[torch.Tensor]
                       ) -> list[torch.Tensor]:
    """Per image, the probabilities ``[D_i, 1, M, M]`` of each detection's
    predicted class's mask."""
    mask_prob = mask_logits.sigmoid()  # (D, num_classes, M, M)
    boxes_per_image = [lab.shape[0] for lab in labels]
    labels = torch.cat(labels)
    index = torch.arange(mask_logits.shape[0], device=labels.device)
    mask_prob = mask_prob[index, labels][:, None]  # (D, 1, M, M)
    return list(mask_prob.split(boxes_per_image, dim=0))
