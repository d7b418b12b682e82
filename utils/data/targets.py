"""Targets derived from other targets, one copy each: boxes from masks, the
band around label edges, dropping instances that occlusion left too small, and
Mask R-CNN's instances from a panoptic map (COCO panoptic's training targets).

Every dataset (Shapes, Cells, COCO), the joint transforms and the boundary
metric use these; chapter 00 introduces boxes from masks, chapter 01 the band.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def boxes_from_masks(masks) -> torch.Tensor:
    """``float32 [N, 4]`` boxes ``(x1, y1, x2, y2)`` enclosing each mask of
    ``[N, H, W]`` (a tensor or an array; any dtype, non-zero = inside).

    Pixel ``i`` covers ``[i, i + 1)``, so ``x2`` is the last column + 1 (the
    data contract's boxes; torchvision's ``masks_to_boxes`` returns the last
    column itself). An empty mask gives ``(0, 0, 0, 0)``.
    """
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {list(masks.shape)}")
    N, H, W = masks.shape
    inside = masks != 0
    rows, cols = inside.any(dim=2), inside.any(dim=1)  # (N, H), (N, W)
    # argmax of a bool finds the first True; flipped, the last one.
    y1 = rows.int().argmax(dim=1)
    y2 = H - rows.flip(1).int().argmax(dim=1)
    x1 = cols.int().argmax(dim=1)
    x2 = W - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return boxes * rows.any(dim=1, keepdim=True)  # empty masks: all zero


def label_edges(labels: torch.Tensor, valid: torch.Tensor | None = None
                ) -> torch.Tensor:
    """bool ``[..., H, W]``: pixels with a 4-neighbour of another label.

    Both pixels of each differing pair are marked. Where ``valid`` (bool, like
    ``labels``) is given, a pair counts only if both of its pixels are valid.
    """
    right = labels[..., :, 1:] != labels[..., :, :-1]
    down = labels[..., 1:, :] != labels[..., :-1, :]
    if valid is not None:
        right &= valid[..., :, 1:] & valid[..., :, :-1]
        down &= valid[..., 1:, :] & valid[..., :-1, :]
    edge = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    edge[..., :, 1:] |= right
    edge[..., :, :-1] |= right
    edge[..., 1:, :] |= down
    edge[..., :-1, :] |= down
    return edge


def edge_band(labels: torch.Tensor, width: int, valid: torch.Tensor | None = None
              ) -> torch.Tensor:
    """bool ``[..., H, W]``: pixels at most ``width - 1`` pixels (chessboard
    distance) from a pixel of :func:`label_edges`, so a band ``2 * width``
    pixels across a straight edge. ``valid`` as in :func:`label_edges`; pixels
    outside it are never in the band."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    edge = label_edges(labels, valid)
    shape = edge.shape
    flat = edge.reshape(-1, 1, *shape[-2:]).float()
    k = 2 * width - 1
    band = F.max_pool2d(flat, k, stride=1, padding=width - 1).bool().reshape(shape)
    return band & valid if valid is not None else band


def drop_small_instances(instance_map: np.ndarray, count: int, min_visible: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renumber an instance map ``int [H, W]`` (0 = none, k = k-th of ``count``
    instances) without the instances of fewer than ``min_visible`` pixels.

    Returns the new map (kept instances numbered 1.. in their old order), the
    old 0-based indices of the kept instances, and the bool ``[H, W]`` mask of
    the dropped pixels (void in every target).
    """
    areas = np.bincount(instance_map.ravel(), minlength=count + 1)
    keep = np.flatnonzero(areas[1:] >= min_visible)
    if len(keep) == count:  # the common case, kept cheap: nothing to renumber
        return instance_map, keep, np.zeros(instance_map.shape, bool)
    relabel = np.zeros(count + 1, instance_map.dtype)
    relabel[keep + 1] = np.arange(1, len(keep) + 1)
    dropped = (instance_map > 0) & (relabel[instance_map] == 0)
    return relabel[instance_map], keep, dropped


def instances_from_panoptic(panoptic: torch.Tensor, thing_ids) -> dict:
    """Mask R-CNN's targets from a panoptic map ``int64 [H, W, 2]`` (category,
    instance id; void ``(255, 0)``): one mask per thing segment.

    A thing segment is a (category, instance id) pair with the category in
    ``thing_ids`` and an instance id > 0; stuff and void make no instance.
    Returns ``boxes float32 [N, 4]`` (:func:`boxes_from_masks`), ``labels int64
    [N]`` in 1..T (label ``k`` is category ``thing_ids[k - 1]``) and ``masks
    uint8 [N, H, W]``, in the order of (instance id, category).
    """
    if panoptic.ndim != 3 or panoptic.shape[-1] != 2:
        raise ValueError(f"panoptic must be [H, W, 2], got {list(panoptic.shape)}")
    category, instance = panoptic[..., 0], panoptic[..., 1]
    things = torch.as_tensor(tuple(thing_ids), dtype=category.dtype)
    thing = torch.isin(category, things) & (instance > 0)
    # One int64 per (instance id, category) pair, ordered as the pairs: one
    # comparison per segment builds its mask (two, and-ed, cost 10x more).
    base = int(category.max()) + 1 if category.numel() else 1
    key = torch.where(thing, instance * base + category, -1)
    segments = torch.unique(key[thing])  # sorted
    masks = (key[None] == segments[:, None, None]).to(torch.uint8)
    categories = segments % base
    # label = 1 + position of the category in thing_ids
    labels = 1 + (categories[:, None] == things[None]).int().argmax(dim=1)
    return {"boxes": boxes_from_masks(masks), "labels": labels.to(torch.int64),
            "masks": masks}
