"""COCO-style mask and box average precision (derived in chapter 01, used in
chapter 08).

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


class DetectionAP:
    """COCO average precision accumulated image by image: mask AP
    (``iou_type="segm"``) or box AP (``iou_type="bbox"``).

    :meth:`update` matches each image's detections at once and keeps only
    scores and matches, so a dataset's masks are never held in memory;
    :meth:`all_reduce` gathers the records of every DDP rank.
    """

    def __init__(self, iou_type: str = "segm", max_dets: int = 100):
        if iou_type not in ("segm", "bbox"):
            raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
        self.iou_type, self.max_dets = iou_type, max_dets
        self.images: list[dict] = []  # per image: class -> (scores, matched, num_gt)

    def update(self, predictions, targets) -> None:
        """Add images: ``predictions`` one dict per image with ``scores``,
        ``labels`` and ``masks`` (bool/uint8 ``[N, H, W]``) or ``boxes``
        (``[N, 4]`` x1, y1, x2, y2); ``targets`` the same without ``scores``."""
        if len(predictions) != len(targets):
            raise ValueError(
                f"{len(predictions)} predictions for {len(targets)} target images"
            )
        first = len(self.images)
        for i, (p, t) in enumerate(zip(predictions, targets)):
            self.images.append(_image(p, t, first + i, self.max_dets, self.iou_type))

    def all_reduce(self) -> DetectionAP:
        """Gather the images of all DDP ranks (no-op without DDP)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.images)
            self.images = [image for part in gathered for image in part]
        return self

    def compute(self) -> dict:
        """``ap`` (0.50:0.95), ``ap50``, ``ap75``, ``per_class`` (class -> AP,
        NaN without ground truth) and ``precision`` (class -> float64
        ``[10, 101]`` interpolated precision, for plotting)."""
        classes = sorted({c for img in self.images for c in img})
        per_class, precision = {}, {}
        for c in classes:
            scores, matched, num_gt = [], [], 0
            for img in self.images:
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
            ap, ap50, ap75 = (float(np.mean(x))
                              for x in (stacked, stacked[0], stacked[5]))
        else:
            ap = ap50 = ap75 = float("nan")
        return {"ap": ap, "ap50": ap50, "ap75": ap75, "per_class": per_class,
                "precision": precision}


def mask_ap(predictions, targets, max_dets: int = 100) -> dict:
    """COCO mask AP of a dataset (see :class:`DetectionAP`): ``predictions``,
    one dict per image with ``masks`` (bool/uint8 ``[N, H, W]``), ``scores``
    and ``labels``; ``targets`` the same without ``scores``."""
    metric = DetectionAP("segm", max_dets)
    metric.update(predictions, targets)
    return metric.compute()


def box_ap(predictions, targets, max_dets: int = 100) -> dict:
    """COCO box AP of a dataset: as :func:`mask_ap` with ``boxes`` ``[N, 4]``
    (x1, y1, x2, y2) instead of masks."""
    metric = DetectionAP("bbox", max_dets)
    metric.update(predictions, targets)
    return metric.compute()


def box_iou_np(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> np.ndarray:
    """IoU of every pair of boxes ``[N, 4]`` x ``[M, 4]`` (x1, y1, x2, y2) as
    COCOeval computes it for ``bbox``: float64 ``[N, M]``, 0 where the union is
    empty."""
    a = boxes_a.double().cpu().numpy().reshape(-1, 4)
    b = boxes_b.double().cpu().numpy().reshape(-1, 4)
    wa, ha = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    wb, hb = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0],
                                                               b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1],
                                                               b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (wa * ha)[:, None] + (wb * hb)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _image(pred: dict, target: dict, i: int, max_dets: int, iou_type: str) -> dict:
    """Per class of one image: (scores in rank order, matches ``[T, D]``,
    number of ground truths)."""
    key = "masks" if iou_type == "segm" else "boxes"
    for name, d, keys in (("predictions", pred, (key, "scores", "labels")),
                          ("targets", target, (key, "labels"))):
        if not isinstance(d, dict) or any(k not in d for k in keys):
            raise ValueError(f"{name}[{i}] must be a dict with keys {keys}")
    if iou_type == "segm":
        p_items, t_items = _masks(pred["masks"], "predictions", i), _masks(
            target["masks"], "targets", i)
        if len(p_items) and len(t_items) and p_items.shape[1:] != t_items.shape[1:]:
            raise ValueError(
                f"image {i}: predicted masks are {list(p_items.shape[1:])} but "
                f"target masks {list(t_items.shape[1:])}"
            )
        iou_fn = mask_iou
    else:
        p_items, t_items = _boxes(pred["boxes"], "predictions", i), _boxes(
            target["boxes"], "targets", i)
        iou_fn = box_iou_np
    scores = torch.as_tensor(pred["scores"]).double().cpu().numpy().reshape(-1)
    p_labels = _labels(pred["labels"], "predictions", i)
    t_labels = _labels(target["labels"], "targets", i)
    if not len(p_items) == len(scores) == len(p_labels):
        raise ValueError(
            f"predictions[{i}]: {len(p_items)} {key}, {len(scores)} scores and "
            f"{len(p_labels)} labels; expected one of each per detection"
        )
    if len(t_items) != len(t_labels):
        raise ValueError(
            f"targets[{i}]: {len(t_items)} {key} but {len(t_labels)} labels"
        )
    out = {}
    for c in sorted(set(p_labels.tolist()) | set(t_labels.tolist())):
        d = np.flatnonzero(p_labels == c)
        d = d[np.argsort(-scores[d], kind="mergesort")][:max_dets]
        g = np.flatnonzero(t_labels == c)
        ious = iou_fn(p_items[d], t_items[g]) if len(d) and len(g) else np.zeros(
            (len(d), len(g)))
        out[c] = (scores[d], match_detections(ious), len(g))
    return out


def _boxes(boxes, name, i) -> torch.Tensor:
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        raise ValueError(f"{name}[{i}]['boxes'] must be float [N, 4], got "
                         f"{boxes.dtype} {list(boxes.shape)}")
    return boxes


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
