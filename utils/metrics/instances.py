"""Objects from a foreground mask, and how well they match the true objects
(chapter 04: touching cells kept apart; chapter 10: the watershed).

A semantic network says which pixels are cell, not which cell: the objects are
the connected components of its foreground (:func:`connected_components`).
:func:`match_instances` then compares a predicted instance map with the true
one, whatever made it (a network, a watershed, a threshold):

- *matches*: pairs of a predicted and a true object with IoU > 0.5 (at most one
  partner each, since two objects that overlap one object by more than half of
  their union would overlap each other); precision, recall and the
  object-level F1 = 2 TP / (2 TP + FP + FN) follow;
- *merged*: true objects that share their predicted object with another true
  object (more than half of each lies in the same predicted object): the
  failure U-Net's border weights are for;
- *split*: true objects that hold more than half of each of two or more
  predicted objects.

Instance maps are integer ``[H, W]``: 0 = no object, ``k > 0`` = object ``k``
(ids need not be consecutive). An optional ``ignore`` mask (bool ``[H, W]``)
takes pixels out of every area and overlap.
"""

from __future__ import annotations

import torch


def connected_components(mask: torch.Tensor, connectivity: int = 4) -> torch.Tensor:
    """Label the connected components of a binary mask.

    ``mask``: bool (or 0/1 integer) ``[H, W]`` or ``[B, H, W]``. Returns
    ``int64`` of the same shape: 0 off the mask, ``1..N`` on it, numbered in
    raster order of each component's first pixel (per image). ``connectivity``
    is 4 (edge neighbours) or 8 (also diagonal).

    Union-find done in parallel: every mask pixel points to a parent pixel of
    smaller index (at first itself); each round, every pair of neighbouring mask
    pixels whose trees differ hooks the larger root under the smaller one, and
    then every pixel follows its parent's parent until it points at its root
    (pointer jumping). A component ends as one tree whose root is its first
    pixel, after a number of rounds that grows with the log of its size.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise ValueError(f"mask must be a tensor [H, W] or [B, H, W], got "
                         f"{getattr(mask, 'shape', type(mask).__name__)}")
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"mask must be bool or integer 0/1, got {mask.dtype}")
    squeeze = mask.ndim == 2
    m = (mask[None] if squeeze else mask).bool()
    index = torch.arange(m.numel(), device=m.device).view(m.shape)
    a, b = _neighbour_pairs(index, m, connectivity)  # (E,), (E,): edges
    parent = index.reshape(-1).clone()
    while True:
        ra, rb = parent[a], parent[b]  # roots: parent is fully compressed
        differ = ra != rb
        if not differ.any():
            break
        high = torch.maximum(ra, rb)[differ]
        low = torch.minimum(ra, rb)[differ]
        parent.scatter_reduce_(0, high, low, reduce="amin")  # hook high under low
        while True:  # pointer jumping
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand
    roots = parent.view(m.shape)
    return _relabel(roots, m)[0 if squeeze else slice(None)]


def _neighbour_pairs(index: torch.Tensor, m: torch.Tensor, connectivity: int):
    """Flat indices ``(a, b)`` of every pair of neighbouring mask pixels."""
    pairs = [(index[:, :, :-1], index[:, :, 1:], m[:, :, :-1] & m[:, :, 1:]),
             (index[:, :-1], index[:, 1:], m[:, :-1] & m[:, 1:])]
    if connectivity == 8:
        pairs += [(index[:, :-1, :-1], index[:, 1:, 1:], m[:, :-1, :-1] & m[:, 1:, 1:]),
                  (index[:, :-1, 1:], index[:, 1:, :-1], m[:, :-1, 1:] & m[:, 1:, :-1])]
    a = torch.cat([i[v] for i, _, v in pairs])
    b = torch.cat([j[v] for _, j, v in pairs])
    return a, b


def _relabel(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Root indices -> 1..N per image, in raster order of the roots."""
    B, H, W = labels.shape
    out = torch.zeros_like(labels)
    for b in range(B):
        roots = labels[b][mask[b]]
        if roots.numel():
            ids = torch.unique(roots)  # sorted: raster order of first pixels
            out[b][mask[b]] = torch.searchsorted(ids, roots) + 1
    return out


def overlap_matrix(pred: torch.Tensor, true: torch.Tensor,
                   ignore: torch.Tensor | None = None):
    """Pixel counts of every (predicted, true) pair of objects.

    Returns ``(pred_ids, true_ids, inter, pred_area, true_area)``: the object
    ids present (``int64 [P]``, ``[T]``), ``inter int64 [P, T]`` and the areas
    ``int64 [P]``, ``[T]``, all outside ``ignore``.
    """
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred and true must be instance maps of one shape [H, W], "
                         f"got {list(pred.shape)} and {list(true.shape)}")
    if pred.is_floating_point() or true.is_floating_point():
        raise ValueError(f"instance maps must be integer, got {pred.dtype} and "
                         f"{true.dtype}")
    if (pred < 0).any() or (true < 0).any():
        raise ValueError("instance ids must be >= 0 (0 = no object)")
    p, t = pred.reshape(-1).long(), true.reshape(-1).long()
    if ignore is not None:
        if ignore.shape != pred.shape or ignore.dtype != torch.bool:
            raise ValueError(f"ignore must be bool {list(pred.shape)}, got "
                             f"{ignore.dtype} {list(ignore.shape)}")
        keep = ~ignore.reshape(-1)
        p, t = p[keep], t[keep]
    pred_ids = torch.unique(p[p > 0])
    true_ids = torch.unique(t[t > 0])
    pi = torch.searchsorted(pred_ids, p).clamp(max=max(len(pred_ids) - 1, 0))
    ti = torch.searchsorted(true_ids, t).clamp(max=max(len(true_ids) - 1, 0))
    both = (p > 0) & (t > 0)
    P, T = len(pred_ids), len(true_ids)
    inter = torch.bincount(pi[both] * T + ti[both], minlength=P * T).view(P, T)
    pred_area = torch.bincount(pi[p > 0], minlength=P)
    true_area = torch.bincount(ti[t > 0], minlength=T)
    return pred_ids, true_ids, inter, pred_area, true_area


def match_instances(pred: torch.Tensor, true: torch.Tensor,
                    ignore: torch.Tensor | None = None,
                    iou_threshold: float = 0.5) -> dict:
    """Compare a predicted instance map with the true one (see the module).

    Returns a dict of counts (``tp``, ``fp``, ``fn``, ``merged``, ``split``,
    ``num_pred``, ``num_true``), rates (``precision``, ``recall``, ``f1``; 1.0
    when there is nothing to find and nothing found) and ``matches``, a list of
    ``(pred_id, true_id, iou)``. ``iou_threshold`` must be >= 0.5, where
    matches are unique.
    """
    if not 0.5 <= iou_threshold < 1:
        raise ValueError(f"iou_threshold must be in [0.5, 1) so that matches are "
                         f"unique, got {iou_threshold}")
    pred_ids, true_ids, inter, pred_area, true_area = overlap_matrix(pred, true,
                                                                     ignore)
    union = pred_area[:, None] + true_area[None, :] - inter
    iou = inter / union.clamp(min=1)
    hit = iou > iou_threshold
    tp = int(hit.sum())
    P, T = len(pred_ids), len(true_ids)
    # a true object's "home": the predicted object holding more than half of it
    home = 2 * inter > true_area[None, :]  # (P, T), at most one True per column
    shared = home.sum(1)  # true objects mostly inside each predicted one
    merged = int((home & (shared[:, None] >= 2)).sum())
    # a predicted object's "home": the true object holding more than half of it
    part = 2 * inter > pred_area[:, None]  # at most one True per row
    split = int((part.sum(0) >= 2).sum())
    fp, fn = P - tp, T - tp
    matches = [(int(pred_ids[i]), int(true_ids[j]), float(iou[i, j]))
               for i, j in hit.nonzero().tolist()]
    return {
        "tp": tp, "fp": fp, "fn": fn,
        "precision": tp / P if P else 1.0,
        "recall": tp / T if T else 1.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0,
        "merged": merged, "split": split,
        "num_pred": P, "num_true": T,
        "matches": matches,
    }


def instance_scores(preds, trues, ignores=None, iou_threshold: float = 0.5) -> dict:
    """:func:`match_instances` summed over images: ``preds``, ``trues`` (and
    ``ignores``) are sequences (or ``[N, H, W]`` tensors) of instance maps.
    Counts add up; precision, recall and F1 are computed from the summed
    counts (pooled over the dataset, not averaged per image)."""
    keys = ("tp", "fp", "fn", "merged", "split", "num_pred", "num_true")
    total = dict.fromkeys(keys, 0)
    if len(preds) != len(trues):
        raise ValueError(f"{len(preds)} predicted maps but {len(trues)} true ones")
    for k in range(len(preds)):
        r = match_instances(preds[k], trues[k],
                            None if ignores is None else ignores[k], iou_threshold)
        for key in keys:
            total[key] += r[key]
    tp, fp, fn = total["tp"], total["fp"], total["fn"]
    total["precision"] = tp / total["num_pred"] if total["num_pred"] else 1.0
    total["recall"] = tp / total["num_true"] if total["num_true"] else 1.0
    total["f1"] = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return total


def remove_small(instances: torch.Tensor, min_area: int) -> torch.Tensor:
    """``instances`` (``[H, W]`` or ``[B, H, W]``, 0 = none) with every object
    of fewer than ``min_area`` pixels set to 0 (ids kept): specks of a noisy
    prediction are not objects."""
    if instances.is_floating_point():
        raise ValueError(f"instances must be integer, got {instances.dtype}")
    flat = instances.reshape(len(instances) if instances.ndim == 3 else 1, -1)
    out = flat.clone()
    for b in range(len(flat)):
        ids, inverse, counts = torch.unique(flat[b], return_inverse=True,
                                            return_counts=True)
        out[b][(counts[inverse] < min_area) & (flat[b] > 0)] = 0
    return out.view(instances.shape)


def grow_labels(instances: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """``instances`` (``[H, W]`` or ``[B, H, W]``, 0 = none) with every object
    grown by ``pixels`` into the background around it (8-neighbourhood, one
    pixel per step; where two objects reach the same pixel, the larger id
    takes it). Undoes the separation borders of
    :func:`utils.losses.weight_map.separation_target` on a prediction, whose
    objects then cover the cells they stand for."""
    if instances.is_floating_point() or instances.ndim not in (2, 3):
        raise ValueError(f"instances must be integer [H, W] or [B, H, W], got "
                         f"{instances.dtype} {list(instances.shape)}")
    x = (instances[None] if instances.ndim == 2 else instances).long()
    for _ in range(pixels):
        # max-pool of int64 labels: exact (no float round trip)
        around = torch.nn.functional.max_pool2d(x[:, None], 3, 1, 1)[:, 0]
        x = torch.where(x > 0, x, around)
    return x[0] if instances.ndim == 2 else x
