"""Panoptic fusion: one (category, instance id) map from an instance model's
detections and a semantic model's class map (chapter 09).

The heuristic of Kirillov et al., "Panoptic Segmentation" (CVPR 2019,
https://arxiv.org/abs/1801.00868, section 7) as Panoptic FPN (Kirillov,
Girshick, He & Dollar, CVPR 2019, https://arxiv.org/abs/1901.02446) and
detectron2's ``combine_semantic_and_instance_outputs`` implement it:

1. **things first, best first**: detections sorted by score, those below
   ``score_thresh`` dropped;
2. **no overlaps**: each detection's binary mask (probability >= ``mask_thresh``)
   is pasted only on the pixels no earlier detection took; a detection whose
   pixels are already taken for more than ``overlap_thresh`` of its area is
   dropped (NMS on masks: it is mostly a duplicate);
3. **stuff on what is left**: each stuff class of the semantic prediction
   takes its pixels that no thing took; a stuff region smaller than
   ``stuff_min_area`` pixels is dropped (small stuff is mostly noise);
4. everything else is **void** ``(void, 0)``: pixels the semantic model gave
   to a thing class that no detection covers, and dropped stuff.

Output: ``int64 [H, W, 2]``, (category, instance id); things numbered 1, 2,
... in pasting order, stuff has instance id 0. The functions take category ids
(the semantic ids of :mod:`utils.data.shapes`): map a detector's labels 1..T
to categories first (``thing_ids[label - 1]``).

Deviations from detectron2: the segments are numbered per image in one
(category, instance id) map rather than as one id map plus a list of segment
records; an empty mask is skipped as there. Defaults are detectron2's
(``score_thresh = 0.5``, ``overlap_thresh = 0.5``, ``stuff_min_area =
4096`` for 800-pixel images: scale it with the image area).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.data import IGNORE_INDEX


@dataclass(frozen=True)
class FusionConfig:
    """The thresholds of :func:`panoptic_fusion` (detectron2's defaults)."""

    score_thresh: float = 0.5  # detections below this score are dropped
    overlap_thresh: float = 0.5  # dropped when more than this share is taken
    stuff_min_area: int = 4096  # stuff regions smaller than this (pixels) dropped
    mask_thresh: float = 0.5  # a mask pixel is the thing's when prob >= this

    def __post_init__(self):
        for name in ("score_thresh", "overlap_thresh", "mask_thresh"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.stuff_min_area < 0:
            raise ValueError(f"stuff_min_area must be >= 0, got "
                             f"{self.stuff_min_area!r}")


def _masks_2d(masks: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` or ``[N, 1, H, W]`` masks as ``[N, H, W]``."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a tensor [N, H, W], got {type(masks).__name__}")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W] or [N, 1, H, W], got "
                         f"{list(masks.shape)}")
    return masks


def paste_things(masks: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor,
                 config: FusionConfig = FusionConfig(),
                 void: int = IGNORE_INDEX) -> torch.Tensor:
    """Rules 1 and 2: the things' ``int64 [H, W, 2]`` map, void elsewhere.

    ``masks``: ``[N, H, W]`` (or ``[N, 1, H, W]``) probabilities in [0, 1] or
    booleans; ``scores``: ``[N]``; ``categories``: ``int64 [N]`` category ids.
    """
    masks = _masks_2d(masks)
    N, H, W = masks.shape
    if scores.shape != (N,) or categories.shape != (N,):
        raise ValueError(f"scores and categories must be [{N}] (one per mask), got "
                         f"{list(scores.shape)} and {list(categories.shape)}")
    if categories.is_floating_point():
        raise ValueError("categories must be integer category ids")
    category = torch.full((H, W), void, dtype=torch.int64, device=masks.device)
    instance = torch.zeros((H, W), dtype=torch.int64, device=masks.device)
    binary = masks if masks.dtype == torch.bool else masks >= config.mask_thresh
    taken = torch.zeros((H, W), dtype=torch.bool, device=masks.device)
    # A stable sort: equal scores keep the detector's order.
    order = torch.sort(scores, descending=True, stable=True).indices
    next_id = 1
    for i in order.tolist():
        if float(scores[i]) < config.score_thresh:
            break  # sorted: every later one is lower
        mask = binary[i]
        area = int(mask.sum())
        if area == 0:
            continue
        overlap = int((mask & taken).sum())
        if overlap / area > config.overlap_thresh:
            continue
        mask = mask & ~taken
        category[mask] = int(categories[i])
        instance[mask] = next_id
        taken |= mask
        next_id += 1
    return torch.stack([category, instance], dim=-1)


def add_stuff(panoptic: torch.Tensor, semantic: torch.Tensor, stuff_ids,
              config: FusionConfig = FusionConfig(),
              void: int = IGNORE_INDEX) -> torch.Tensor:
    """Rules 3 and 4: stuff of ``semantic`` (``int64 [H, W]`` class ids) on
    the void pixels of ``panoptic`` (``int64 [H, W, 2]``); regions of fewer
    than ``config.stuff_min_area`` pixels stay void, and so do the semantic
    model's thing pixels that no detection took. Returns a new map."""
    if semantic.ndim != 2 or panoptic.shape != (*semantic.shape, 2):
        raise ValueError(f"semantic must be [H, W] and panoptic [H, W, 2] of the "
                         f"same H, W, got {list(semantic.shape)} and "
                         f"{list(panoptic.shape)}")
    out = panoptic.clone()
    free = out[..., 0] == void
    for c in stuff_ids:
        region = free & (semantic == c)
        area = int(region.sum())
        if area == 0 or area < config.stuff_min_area:
            continue
        out[..., 0][region] = int(c)
        out[..., 1][region] = 0
    return out


def panoptic_fusion(semantic: torch.Tensor, masks: torch.Tensor,
                    scores: torch.Tensor, categories: torch.Tensor, stuff_ids,
                    config: FusionConfig = FusionConfig(),
                    void: int = IGNORE_INDEX) -> torch.Tensor:
    """The four rules (module docstring): ``int64 [H, W, 2]`` (category,
    instance id) from a semantic class map ``int64 [H, W]`` and detections
    (``masks [N, H, W]`` or ``[N, 1, H, W]`` in [0, 1], ``scores [N]``,
    ``categories int64 [N]``) of one image."""
    things = paste_things(masks, scores, categories, config, void)
    return add_stuff(things, semantic, stuff_ids, config, void)
