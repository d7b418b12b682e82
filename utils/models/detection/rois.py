"""The two ways RoI operations take their boxes (chapter 08), as in torchvision.

- ``Tensor[K, 5]``: one row ``(batch_index, x1, y1, x2, y2)`` per RoI, the
  batch index (a float, truncated to an int) says which image of the batch the
  RoI lies in;
- ``list[Tensor[L_i, 4]]``: the boxes of image ``i`` in entry ``i``.

Coordinates are in the input image's pixels; ``spatial_scale`` maps them onto the
feature map (1/16 for a stride-16 map).
"""

from __future__ import annotations

import torch


def convert_boxes_to_roi_format(boxes: list[torch.Tensor]) -> torch.Tensor:
    """``[Tensor[L_i, 4]] -> Tensor[sum L_i, 5]`` with image ``i``'s index first."""
    batch_index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(batch_index, dim=0), torch.cat(boxes, dim=0)], dim=1)


def as_rois(boxes: torch.Tensor | list[torch.Tensor],
            input: torch.Tensor) -> torch.Tensor:
    """Check ``boxes`` (either format) against ``input [N, C, H, W]`` and return
    ``Tensor[K, 5]`` in ``input``'s dtype and device, detached: like
    torchvision's kernels, RoI operations give no gradient to the boxes."""
    if not isinstance(input, torch.Tensor) or input.ndim != 4:
        got = list(input.shape) if isinstance(input, torch.Tensor) else type(input)
        raise ValueError(f"input must be a feature map [N, C, H, W], got {got}")
    if not input.is_floating_point():
        raise TypeError(f"input must be floating point, got {input.dtype}")
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, torch.Tensor) or b.ndim != 2 or b.shape[1] != 4:
                got = list(b.shape) if isinstance(b, torch.Tensor) else type(b)
                raise ValueError(f"boxes[{i}] must be a tensor [L, 4] of "
                                 f"(x1, y1, x2, y2), got {got}")
        if len(boxes) > input.shape[0]:
            raise ValueError(f"{len(boxes)} lists of boxes for a batch of "
                             f"{input.shape[0]} feature maps")
        if len(boxes) == 0:
            return input.new_zeros((0, 5))
        rois = convert_boxes_to_roi_format([b.to(input.dtype) for b in boxes])
    elif isinstance(boxes, torch.Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes must be a tensor [K, 5] of (batch_index, x1, y1, "
                             f"x2, y2) or a list of [L, 4], got {list(boxes.shape)}")
        rois = boxes
    else:
        raise TypeError(f"boxes must be a tensor [K, 5] or a list of tensors [L, 4], "
                        f"got {type(boxes)}")
    rois = rois.detach().to(dtype=input.dtype, device=input.device)
    if rois.numel() and not ((rois[:, 0] > -1) & (rois[:, 0] < input.shape[0])).all():
        bad = rois[:, 0][~((rois[:, 0] > -1) & (rois[:, 0] < input.shape[0]))][0].item()
        raise ValueError(f"a RoI has batch index {bad}, expected 0 .. "
                         f"{input.shape[0] - 1} (the batch has {input.shape[0]} maps)")
    return rois
