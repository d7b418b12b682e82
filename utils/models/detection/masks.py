"""Pasting Mask R-CNN's fixed-size mask predictions into the image (chapter 08).

He et al., "Mask R-CNN", ICCV 2017, https://arxiv.org/abs/1703.06870
(section 3, "Inference"): the mask head predicts an ``M x M`` (28 x 28) mask of
probabilities per detection, in the frame of its box; at inference the mask is
resized to the box's size and placed in the image, then thresholded at 0.5.

Semantics are torchvision's ``paste_masks_in_image``, step for step:

1. ``expand_masks``: pad each ``M x M`` mask with ``padding`` zeros on every
   side, and ``expand_boxes``: grow each box about its centre by the same
   factor ``(M + 2 padding) / M``, so the mask's border pixels are interpolated
   towards 0 instead of being smeared to the box's edge;
2. the grown boxes are truncated to int64 (toward zero);
3. per mask: bilinear resize (``align_corners=False``) to
   ``(y2 - y1 + 1, x2 - x1 + 1)`` (at least 1 x 1: integer boxes include their
   end pixel), then copy the part inside the image.

Step 3 is a loop over the masks, each with its own output size; that is what
``F.interpolate`` needs, and what makes the result identical to torchvision's.

Deviations from torchvision: a box wholly outside the image pastes nothing
(torchvision fails on a slice of the wrong size; Mask R-CNN clips its boxes to
the image first, so it never sees one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """Grow ``float [N, 4]`` boxes about their centres by ``scale``."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    w_half = w_half * scale
    h_half = h_half * scale
    return torch.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), dim=1)


def expand_masks(masks: torch.Tensor, padding: int) -> tuple[torch.Tensor, float]:
    """Pad ``[N, 1, M, M]`` masks by ``padding`` pixels on each side; return them
    and the box growth factor ``(M + 2 padding) / M`` that keeps them aligned."""
    M = masks.shape[-1]
    scale = float(M + 2 * padding) / M
    return F.pad(masks, (padding,) * 4), scale


def paste_mask_in_image(mask: torch.Tensor, box: torch.Tensor, im_h: int,
                        im_w: int) -> torch.Tensor:
    """One mask ``[m, m]`` resized into integer ``box`` (x1, y1, x2, y2 inclusive)
    of an ``im_h x im_w`` zero image."""
    x1, y1, x2, y2 = (int(v) for v in box)
    w = max(x2 - x1 + 1, 1)
    h = max(y2 - y1 + 1, 1)
    resized = F.interpolate(mask[None, None], size=(h, w), mode="bilinear",
                            align_corners=False)[0, 0]  # (h, w)
    im_mask = torch.zeros((im_h, im_w), dtype=mask.dtype, device=mask.device)
    x_0, x_1 = max(x1, 0), min(x2 + 1, im_w)
    y_0, y_1 = max(y1, 0), min(y2 + 1, im_h)
    if x_1 > x_0 and y_1 > y_0:
        im_mask[y_0:y_1, x_0:x_1] = resized[y_0 - y1:y_1 - y1, x_0 - x1:x_1 - x1]
    return im_mask


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor,
                         img_shape: tuple[int, int], padding: int = 1) -> torch.Tensor:
    """Paste each detection's mask into a full-size image.

    Args:
        masks: ``float [N, 1, M, M]`` mask probabilities in their boxes' frames.
        boxes: ``float [N, 4]`` ``(x1, y1, x2, y2)`` in image pixels.
        img_shape: ``(height, width)`` of the image.
        padding: zero border added to each mask (torchvision: 1).

    Returns:
        ``[N, 1, height, width]`` in ``masks``' dtype: each mask's values inside
        its (grown) box, 0 elsewhere. Threshold at 0.5 for binary masks.
    """
    if masks.ndim != 4 or masks.shape[1] != 1 or boxes.shape != (masks.shape[0], 4):
        raise ValueError(f"expected masks [N, 1, M, M] and boxes [N, 4], got "
                         f"{list(masks.shape)} and {list(boxes.shape)}")
    masks, scale = expand_masks(masks, padding=padding)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64)  # truncation
    im_h, im_w = img_shape
    pasted = [paste_mask_in_image(m[0], b, im_h, im_w) for m, b in zip(masks, boxes)]
    if not pasted:
        return masks.new_empty((0, 1, im_h, im_w))
    return torch.stack(pasted, dim=0)[:, None]  # (N, 1, H, W)
