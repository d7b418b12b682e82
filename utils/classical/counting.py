"""Counting instances: matches, merges and splits between a predicted and a
true instance map (chapter 10).

Splitting touching cells is judged by how many cells come out whole: a
predicted segment and a true cell *match* when their IoU exceeds 0.5 (then
each has at most one partner, as in panoptic quality), and the mistakes have
names:

- a **merge**: one predicted segment holds most (> 50 %) of two or more true
  cells, the failure of plain thresholding on touching cells;
- a **split**: a true cell holds most (> 50 %) of two or more predicted
  segments, the failure of a watershed with too many markers.
"""

from __future__ import annotations

import torch


def _check(instances, name):
    if not isinstance(instances, torch.Tensor) or instances.ndim != 2 or \
            instances.is_floating_point():
        raise ValueError(f"{name} must be an integer instance map [H, W] "
                         "(0 = background, 1..N = instances)")
    if instances.numel() and instances.min() < 0:
        raise ValueError(f"{name} must be >= 0")


def overlaps(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``int64 [P + 1, T + 1]``: pixels shared by predicted segment ``p`` and
    true instance ``t`` (row and column 0: the background)."""
    _check(pred, "pred")
    _check(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {list(pred.shape)} and target "
                         f"{list(target.shape)} differ in size")
    P, T = int(pred.max()) + 1, int(target.max()) + 1
    index = pred.flatten().long() * T + target.flatten().long()
    return torch.bincount(index, minlength=P * T).view(P, T)


def count_instances(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Matches (IoU > 0.5), misses, false segments, merges and splits of the
    instance map ``pred`` against ``target`` (both ``int [H, W]``, 0 =
    background; labels need not be consecutive: empty ones are skipped).

    Returns ints ``tp`` (matched pairs), ``fp`` (predicted segments without
    a match), ``fn`` (true instances without one), ``merged`` (predicted
    segments holding most of two or more true instances), ``split`` (true
    instances holding most of two or more predicted segments), the counts
    ``pred`` and ``target``, and the float ``f1 = 2 tp / (2 tp + fp + fn)``.
    """
    n = overlaps(pred, target)[1:, 1:].double()  # drop the background
    pred_area = torch.bincount(pred.flatten().long())[1:].double()
    target_area = torch.bincount(target.flatten().long())[1:].double()
    pred_area = pred_area[: n.shape[0]]
    target_area = target_area[: n.shape[1]]
    pred_alive, target_alive = pred_area > 0, target_area > 0
    union = pred_area[:, None] + target_area[None] - n
    iou = n / union.clamp(min=1)
    matched = iou > 0.5
    tp = int(matched.sum())
    P, T = int(pred_alive.sum()), int(target_alive.sum())
    most_of_target = n > 0.5 * target_area[None]  # (P, T)
    most_of_pred = n > 0.5 * pred_area[:, None]
    merged = int((most_of_target.sum(1) >= 2).sum())
    split = int((most_of_pred.sum(0) >= 2).sum())
    denominator = 2 * tp + (P - tp) + (T - tp)
    return {"tp": tp, "fp": P - tp, "fn": T - tp, "merged": merged, "split": split,
            "pred": P, "target": T,
            "f1": 2 * tp / denominator if denominator else 1.0}


def instance_map(masks: torch.Tensor) -> torch.Tensor:
    """``int64 [H, W]`` with instance ``k`` (mask ``k - 1`` of ``masks``
    ``uint8/bool [N, H, W]``) labelled ``k``, 0 elsewhere; masks must not
    overlap (the course's datasets' do not)."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {list(masks.shape)}")
    ids = torch.arange(1, len(masks) + 1, dtype=torch.int64)[:, None, None]
    if len(masks) and (masks.bool().sum(0) > 1).any():
        raise ValueError("masks overlap: an instance map needs disjoint masks")
    return (masks.bool().long() * ids).sum(0)
