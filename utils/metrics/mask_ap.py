"""COCO-style mask average precision (derived in chapter 01, used in chapter 08).

The numbers are those of the COCO evaluation code (``pycocotools`` ``COCOeval``
with ``iouType="segm"``, area range "all", no crowd annotations):

- per image and class, detections are ranked by score (a stable sort, so equal
  scores keep their input order) and only the first ``max_dets`` are kept;
- at each IoU threshold t in 0.50:0.05:0.95, detections in rank order take the
  unmatched ground truth of their class with the highest IoU, if that IoU is
  >= t (of equal IoUs the later ground truth wins, as in COCOeval);
- per class, the detections of all images are ranked by score again (stable:
  image order, then rank), precision is made monotone (each value replaced by the
  best precision at any higher recall) and read at the 101 recall points
  0, 0.01, ..., 1 (0 past the highest recall reached); AP is their mean;
- the overall AP averages over thresholds, recall points and the classes that
  have ground truth; a class without ground truth has AP NaN (COCO: -1).
"""

from __future__ import annotations

import numpy as np
import torch

# Built exactly as COCOeval builds them: np.linspace's floats, not 0.05 * k.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1)


def mask_iou(masks_a: torch.Tensor, masks_b: torch.Tensor) -> np.ndarray:
    """IoU of every pair of masks ``[N, H, W]`` x ``[M, H, W]``: float64 ``[N, M]``
    (0 for two empty masks)."""
    if masks_a.ndim != 3 or masks_b.ndim != 3 or masks_a.shape[1:] != masks_b.shape[1:]:
        raise ValueError(
            f"expected masks [N, H, W] and [M, H, W] of one size, got "
            f"{list(masks_a.shape)} and {list(masks_b.shape)}"
        )
    a = masks_a.flatten(1)
    b = masks_b.flatten(1).to(a.device)
    # Sums of 0/1 values are exact in float32 up to 2**24 pixels.
    dtype = torch.float32 if a.shape[1] <= 1 << 24 else torch.float64
    a, b = a.to(dtype), b.to(dtype)
    inter = (a @ b.T).double().cpu().numpy()
    union = a.sum(1).double().cpu().numpy()[:, None] + b.sum(1).double().cpu().numpy()
    union = union - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_detections(ious: np.ndarray, thresholds=IOU_THRESHOLDS) -> np.ndarray:
    """Greedy COCO matching of detections (rows of ``ious``, best score first)
    to ground truths (columns): bool ``[T, D]``, True where detection d is a
    true positive at threshold t."""
    D, G = ious.shape
    matched = np.zeros((len(thresholds), D), dtype=bool)
    if G == 0:
        return matched
    for ti, t in enumerate(thresholds):
        free = np.ones(G, dtype=bool)
        for d in range(D):
            candidates = np.where(free, ious[d], -np.inf)
            best = candidates.max()
            if best >= min(t, 1 - 1e-10):
                # Of equal IoUs the last ground truth wins, as in COCOeval.
                m = G - 1 - int(np.argmax(candidates[::-1] == best))
                free[m] = False
                matched[ti, d] = True
    return matched


def precision_at_recall(matched: np.ndarray, num_gt: int) -> np.ndarray:
    """Interpolated precision ``[T, 101]`` of detections already in rank order
    (``matched`` bool ``[T, D]``) against ``num_gt`` ground truths."""
    tp = np.cumsum(matched, axis=1).astype(float)
    fp = np.cumsum(~matched, axis=1).astype(float)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))  # COCOeval's epsilon
    # Interpolate: the best precision at this or any higher recall.
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((matched.shape[0], len(RECALL_POINTS)))
    for t in range(matched.shape[0]):
        idx = np.searchsorted(recall[t], RECALL_POINTS, side="left")
        ok = idx < matched.shape[1]
        out[t, ok] = precision[t, idx[ok]]
    return out


def mask_ap(predictions, targets, max_dets: int = 100) -> dict:
    """COCO mask AP of a dataset.

    ``predictions``: one dict per image with ``masks`` (bool/uint8 ``[N, H, W]``),
    ``scores`` (``[N]``) and ``labels`` (int ``[N]``); ``targets``: the same
    without ``scores``. Returns ``ap`` (0.50:0.95), ``ap50``, ``ap75``,
    ``per_class`` (class -> AP, NaN without ground truth) and ``precision``
    (class -> float64 ``[10, 101]`` interpolated precision, for plotting).
    """
    if len(predictions) != len(targets):
        raise ValueError(
            f"{len(predictions)} predictions for {len(targets)} target images"
        )
    images = [_image(p, t, i, max_dets) for i, (p, t) in
              enumerate(zip(predictions, targets))]
    classes = sorted({c for img in images for c in img})
    per_class, precision = {}, {}
    for c in classes:
        scores, matched, num_gt = [], [], 0
        for img in images:
            if c in img:
                s, m, g = img[c]
                scores.append(s)
                matched.append(m)
                num_gt += g
        if num_gt == 0:
            per_class[c] = float("nan")
            continue
        scores = np.concatenate(scores)
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate(matched, axis=1)[:, order]
        precision[c] = precision_at_recall(matched, num_gt)
        per_class[c] = float(np.mean(precision[c]))
    if precision:
        stacked = np.stack(list(precision.values()), axis=-1)  # [T, R, K]
        ap, ap50, ap75 = (float(np.mean(x)) for x in (stacked, stacked[0], stacked[5]))
    else:
        ap = ap50 = ap75 = float("nan")
    return {"ap": ap, "ap50": ap50, "ap75": ap75, "per_class": per_class,
            "precision": precision}


def _image(pred: dict, target: dict, i: int, max_dets: int) -> dict:
    """Per class of one image: (scores in rank order, matches ``[T, D]``,
    number of ground truths)."""
    for name, d, keys in (("predictions", pred, ("masks", "scores", "labels")),
                          ("targets", target, ("masks", "labels"))):
        if not isinstance(d, dict) or any(k not in d for k in keys):
            raise ValueError(f"{name}[{i}] must be a dict with keys {keys}")
    p_masks, t_masks = _masks(pred["masks"], "predictions", i), _masks(
        target["masks"], "targets", i)
    scores = torch.as_tensor(pred["scores"]).double().cpu().numpy().reshape(-1)
    p_labels = _labels(pred["labels"], "predictions", i)
    t_labels = _labels(target["labels"], "targets", i)
    if not len(p_masks) == len(scores) == len(p_labels):
        raise ValueError(
            f"predictions[{i}]: {len(p_masks)} masks, {len(scores)} scores and "
            f"{len(p_labels)} labels; expected one of each per detection"
        )
    if len(t_masks) != len(t_labels):
        raise ValueError(
            f"targets[{i}]: {len(t_masks)} masks but {len(t_labels)} labels"
        )
    if len(p_masks) and len(t_masks) and p_masks.shape[1:] != t_masks.shape[1:]:
        raise ValueError(
            f"image {i}: predicted masks are {list(p_masks.shape[1:])} but target "
            f"masks {list(t_masks.shape[1:])}"
        )
    out = {}
    for c in sorted(set(p_labels.tolist()) | set(t_labels.tolist())):
        d = np.flatnonzero(p_labels == c)
        d = d[np.argsort(-scores[d], kind="mergesort")][:max_dets]
        g = np.flatnonzero(t_labels == c)
        ious = mask_iou(p_masks[d], t_masks[g]) if len(d) and len(g) else np.zeros(
            (len(d), len(g)))
        out[c] = (scores[d], match_detections(ious), len(g))
    return out


def _masks(masks, name, i) -> torch.Tensor:
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"{name}[{i}]['masks'] must be [N, H, W], got "
                         f"{list(masks.shape)}")
    if masks.is_floating_point():
        raise ValueError(f"{name}[{i}]['masks'] must be bool or uint8 (binarise "
                         f"soft masks first), got {masks.dtype}")
    return masks != 0


def _labels(labels, name, i) -> np.ndarray:
    labels = torch.as_tensor(labels)
    if labels.is_floating_point():
        raise ValueError(f"{name}[{i}]['labels'] must be integers, got {labels.dtype}")
    return labels.cpu().numpy().reshape(-1).astype(np.int64)
