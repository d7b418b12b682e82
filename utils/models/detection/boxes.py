"""Box geometry: area, IoU, clipping, small-box removal, boxes around masks
(chapter 08).

Every box here is a row ``(x1, y1, x2, y2)`` of a ``float [N, 4]`` tensor in
pixel coordinates: ``x`` grows to the right, ``y`` downwards, ``(x1, y1)`` is
the top-left corner and ``(x2, y2)`` the bottom-right one, and a box covers the
continuous region ``[x1, x2] x [y1, y2]``, so its width is ``x2 - x1``.

The functions have torchvision's signatures and semantics (``torchvision.ops``),
down to the corner cases: degenerate boxes are not rejected, two zero-area boxes
have IoU ``0 / 0 = nan``, half-precision and small integer boxes are upcast
before multiplying (to ``float32`` and ``int32``), and ``masks_to_boxes`` gives
the index of the last pixel as ``x2``.
"""

from __future__ import annotations

import torch


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in a type whose products do not overflow: float16/bfloat16 ->
    float32, int8/int16/uint8 -> int32; float32/64 and int32/64 unchanged."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def _check_boxes(boxes: torch.Tensor, name: str = "boxes") -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.ndim < 1 or boxes.shape[-1] != 4:
        got = list(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes)
        raise ValueError(f"{name} must be a tensor [..., 4] of (x1, y1, x2, y2), "
                         f"got {got}")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box.

    ``boxes``: ``[..., 4]`` as ``(x1, y1, x2, y2)``, any real dtype. Returns
    ``[...]`` in the upcast dtype (float16 -> float32, int16 -> int32). A box with
    ``x2 < x1`` gets a negative area, as in torchvision: nothing is clamped.
    """
    _check_boxes(boxes)
    boxes = _upcast(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair: ``[N, 4] x [M, 4] -> [N, M]``.

    IoU = |A n B| / (|A| + |B| - |A n B|), the intersection's sides clamped at 0.
    Leading batch dimensions broadcast as in torchvision (``[..., N, 4]``). The
    result is floating point (true division, also for integer boxes). Two
    zero-area boxes give ``0 / 0 = nan``; a zero-area box against a box of
    positive area gives 0.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    # (N, M, 2) each:
    top_left = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = _upcast(bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


def clip_boxes_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamp x to ``[0, width]`` and y to ``[0, height]``; ``size = (height, width)``.

    Note the bound is ``width``, not ``width - 1``: boxes are continuous regions
    and the image covers ``[0, W] x [0, H]``. Same shape and dtype as ``boxes``.
    """
    _check_boxes(boxes)
    height, width = size
    boxes_x = boxes[..., 0::2].clamp(min=0, max=width)
    boxes_y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((boxes_x, boxes_y), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices (``int64 [K]``, increasing) of the boxes whose width and height
    are both ``>= min_size``."""
    _check_boxes(boxes)
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    keep = (ws >= min_size) & (hs >= min_size)
    return torch.where(keep)[0]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """The tightest box around each mask, with torchvision's convention.

    ``masks``: ``[N, H, W]``, nonzero = inside (any dtype). Returns ``float32
    [N, 4]`` ``(x1, y1, x2, y2)`` where ``x1, y1`` are the first and ``x2, y2``
    the LAST column and row holding a pixel, so a one-pixel mask at ``(y, x)``
    gives the degenerate box ``(x, y, x, y)``. An empty mask gives
    ``(0, 0, 0, 0)``; ``N = 0`` gives ``[0, 4]``.

    Careful: the course's datasets (``utils.data``) give instance boxes with
    ``x2 = last column + 1`` (the box covers the pixels' squares, as in COCO);
    this function follows ``torchvision.ops.masks_to_boxes`` instead, and its
    boxes are 1 pixel smaller on the right and at the bottom.
    """
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3:
        got = list(masks.shape) if isinstance(masks, torch.Tensor) else type(masks)
        raise ValueError(f"masks must be a tensor [N, H, W], got {got}")
    if masks.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    _, height, width = masks.shape
    inside = masks.bool()
    rows = inside.any(dim=2).float()  # (N, H): does row y hold a pixel?
    cols = inside.any(dim=1).float()  # (N, W)
    # argmax returns the first maximum: the first row/column with a pixel, and
    # on the flipped vector the last one counted from the end.
    y1 = rows.argmax(dim=1)
    x1 = cols.argmax(dim=1)
    y2 = (height - 1) - rows.flip(1).argmax(dim=1)
    x2 = (width - 1) - cols.flip(1).argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    empty = rows.sum(1) == 0
    return boxes.masked_fill(empty[:, None], 0)
