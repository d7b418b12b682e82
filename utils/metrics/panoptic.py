"""Panoptic quality, PQ = SQ x RQ (Kirillov et al., "Panoptic Segmentation",
https://arxiv.org/abs/1801.00868), derived in chapter 01 and used in chapter 09.

The definition is the one of the COCO panoptic evaluation (``panopticapi``):

- a segment is a (category, instance id) pair; stuff has one segment per
  category and image, whatever instance ids the map holds;
- a predicted and a ground-truth segment of the same category match when their
  IoU is > 0.5, where the union leaves out the predicted pixels that lie on
  ground-truth void; IoU > 0.5 makes every match unique;
- an unmatched ground-truth segment is a false negative; an unmatched predicted
  segment is a false positive unless more than half of it lies on void;
- per category, ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``,
  ``SQ = sum(IoU) / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``, counted over the
  whole dataset; the overall, things and stuff numbers average the categories
  that have at least one TP, FP or FN.

There are no crowd regions: ground truth is either a segment or void.
"""

from __future__ import annotations

import torch

from utils.data import IGNORE_INDEX
from utils.metrics.reduce import all_reduce_sum_

# Segment keys pack (category, instance id) into one int64: category * 2**31 + id.
_SHIFT = 1 << 31


class PanopticQuality:
    """Accumulates per-category TP, FP, FN and the IoU sum of the matches.

    ``things`` and ``stuffs`` are the category ids of each kind; pixels of
    category ``void`` are unlabelled (in a prediction: predicted as nothing).
    """

    def __init__(self, things, stuffs, void: int = IGNORE_INDEX):
        self.things = tuple(int(c) for c in things)
        self.stuffs = tuple(int(c) for c in stuffs)
        self.categories = tuple(sorted(self.things + self.stuffs))
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(
                f"a category is listed twice in things {self.things} and "
                f"stuffs {self.stuffs}"
            )
        if void in self.categories:
            raise ValueError(f"void {void} is also listed as a category")
        if any(c < 0 for c in self.categories):
            raise ValueError(f"category ids must be >= 0, got {self.categories}")
        self.void = int(void)
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        n = len(self.categories)
        self.tp = torch.zeros(n, dtype=torch.int64)
        self.fp = torch.zeros(n, dtype=torch.int64)
        self.fn = torch.zeros(n, dtype=torch.int64)
        self.iou_sum = torch.zeros(n, dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add images: integer ``[..., H, W, 2]`` maps of (category, instance
        id), ``pred`` shaped like ``target``; each ``[H, W, 2]`` is matched on
        its own."""
        for name, x in (("pred", pred), ("target", target)):
            if not isinstance(x, torch.Tensor) or x.is_floating_point() or (
                x.is_complex() or x.dtype == torch.bool
            ):
                raise ValueError(f"{name} must be an integer tensor [..., H, W, 2]")
            if x.ndim < 3 or x.shape[-1] != 2:
                raise ValueError(
                    f"{name} must be [..., H, W, 2] (category, instance id), "
                    f"got {list(x.shape)}"
                )
        if pred.shape != target.shape:
            raise ValueError(
                f"pred {list(pred.shape)} and target {list(target.shape)} differ"
            )
        H, W = target.shape[-3:-1]
        pred = pred.reshape(-1, H, W, 2).to(target.device, torch.int64)
        for p, t in zip(pred, target.reshape(-1, H, W, 2).to(torch.int64)):
            self._update_image(p, t)

    def _update_image(self, pred, target) -> None:
        gt_index, gt_cat = self._segments(target, "target")
        pr_index, pr_cat = self._segments(pred, "pred")
        G, P = len(gt_cat), len(pr_cat)
        # Index G (resp. P) is void. inter[g, p] = pixels in both.
        inter = torch.bincount(gt_index * (P + 1) + pr_index,
                               minlength=(G + 1) * (P + 1))
        inter = inter.reshape(G + 1, P + 1).double()
        gt_area = inter[:G].sum(dim=1)  # [G], pixels of each target segment
        pr_area = inter[:, :P].sum(dim=0)  # [P], pixels of each predicted segment
        pr_void = inter[G, :P]  # [P], predicted pixels on target void
        iou = segment_iou(inter[:G, :P], gt_area, pr_area, pr_void)
        match = (iou > 0.5) & (gt_cat[:, None] == pr_cat[None, :])
        g, p = match.nonzero(as_tuple=True)
        n = len(self.categories)
        self.tp += torch.bincount(gt_cat[g], minlength=n).cpu()
        self.iou_sum += torch.bincount(gt_cat[g], iou[g, p], minlength=n).cpu()
        gt_free = torch.ones(G, dtype=torch.bool, device=iou.device)
        gt_free[g] = False
        self.fn += torch.bincount(gt_cat[gt_free], minlength=n).cpu()
        pr_free = torch.ones(P, dtype=torch.bool, device=iou.device)
        pr_free[p] = False
        # A prediction mostly on unlabelled ground truth cannot be judged wrong.
        pr_free &= ~(pr_void / pr_area.clamp(min=1) > 0.5)
        self.fp += torch.bincount(pr_cat[pr_free], minlength=n).cpu()

    def _segments(self, panoptic, name):
        """Per-pixel segment index (void = number of segments) and, per segment,
        the index of its category in ``self.categories``."""
        cat, inst = panoptic[..., 0].reshape(-1), panoptic[..., 1].reshape(-1)
        if (inst < 0).any() or (inst >= _SHIFT).any():
            raise ValueError(f"{name} instance ids must lie in [0, 2**31)")
        if (cat < 0).any():
            raise ValueError(f"{name} has negative category ids")
        keys, index = torch.unique(cat * _SHIFT + inst, return_inverse=True)
        cats = (keys // _SHIFT).tolist()
        known = set(self.categories) | {self.void}
        unknown = sorted(set(cats) - known)
        if unknown:
            raise ValueError(
                f"{name} has categories {unknown[:10]} that are neither things "
                f"{self.things}, stuffs {self.stuffs} nor void {self.void}"
            )
        # Stuff is one segment per category: drop its instance ids.
        stuff = set(self.stuffs)
        segment = [(c, 0) if c in stuff else (c, k) for c, k in
                   zip(cats, keys.tolist())]
        names = sorted({s for s in segment if s[0] != self.void})
        number = {s: i for i, s in enumerate(names)}
        void = len(names)
        lut = torch.tensor([void if s[0] == self.void else number[s] for s in segment],
                           dtype=torch.int64, device=panoptic.device)
        position = {c: i for i, c in enumerate(self.categories)}
        seg_cat = torch.tensor([position[c] for c, _ in names], dtype=torch.int64,
                               device=panoptic.device)
        return lut[index], seg_cat

    def all_reduce(self) -> PanopticQuality:
        """Sum the counts of all DDP ranks in place (no-op without DDP)."""
        for counts in (self.tp, self.fp, self.fn, self.iou_sum):
            all_reduce_sum_(counts)
        return self

    def compute(self) -> dict:
        """``pq``, ``sq``, ``rq`` and ``n`` (categories averaged) overall, the same
        with suffix ``_things`` and ``_stuff``, and ``per_class``: category id ->
        dict of ``pq``, ``sq``, ``rq``, ``tp``, ``fp``, ``fn``.

        As in panopticapi, a category with no TP, FP or FN reports 0 and is left
        out of the averages; an average over no category is NaN.
        """
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        denom = tp + 0.5 * fp + 0.5 * fn
        seen = denom > 0
        pq = torch.where(seen, self.iou_sum / denom.clamp(min=0.5), 0.0)
        sq = torch.where(tp > 0, self.iou_sum / tp.clamp(min=1), 0.0)
        rq = torch.where(seen, tp / denom.clamp(min=0.5), 0.0)
        out = {}
        for suffix, group in (("", self.categories), ("_things", self.things),
                              ("_stuff", self.stuffs)):
            chosen = torch.tensor([c in group for c in self.categories]) & seen
            n = int(chosen.sum())
            for key, value in (("pq", pq), ("sq", sq), ("rq", rq)):
                out[key + suffix] = float(value[chosen].mean()) if n else float("nan")
            out["n" + suffix] = n
        out["per_class"] = {
            c: {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i]),
                "tp": int(self.tp[i]), "fp": int(self.fp[i]), "fn": int(self.fn[i])}
            for i, c in enumerate(self.categories)
        }
        return out


def segment_iou(inter, gt_area, pred_area, pred_void):
    """IoU of every (target, predicted) segment pair, COCO-panoptic style:
    ``inter / (gt_area + pred_area - inter - pred_void)``, the predicted pixels
    on target void left out of the union. Shapes ``[G, P]``, ``[G]``, ``[P]``,
    ``[P]``."""
    union = gt_area[:, None] + pred_area[None, :] - inter - pred_void[None, :]
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0)


def match_segments(target: torch.Tensor, pred: torch.Tensor, void: int = 0) -> dict:
    """Match the segments of two id maps ``[H, W]`` of one image and category.

    ``target`` pixels equal to ``void`` are unlabelled; in ``pred`` they are
    pixels predicted as nothing. Returns ``target_ids``, ``pred_ids`` (int64
    ``[M]``, ascending in target id) and ``iou`` (float64 ``[M]``) of the pairs
    with IoU > 0.5, and ``fn``, ``fp``: the unmatched target segments and the
    unmatched predicted segments that are not more than half on void.
    """
    if target.shape != pred.shape or target.ndim != 2:
        raise ValueError(
            f"target and pred must be [H, W] id maps of one shape, got "
            f"{list(target.shape)} and {list(pred.shape)}"
        )
    t_ids, t_index = torch.unique(target.reshape(-1), return_inverse=True)
    p_ids, p_index = torch.unique(pred.reshape(-1).to(target.device),
                                  return_inverse=True)
    T, P = len(t_ids), len(p_ids)
    inter = torch.bincount(t_index * P + p_index, minlength=T * P)
    inter = inter.reshape(T, P).double()
    t_real, p_real = t_ids != void, p_ids != void
    area_t, area_p = inter.sum(dim=1), inter.sum(dim=0)
    on_void = inter[~t_real].sum(dim=0)  # [P], predicted pixels on target void
    iou = segment_iou(inter, area_t, area_p, on_void)
    iou = iou * t_real[:, None] * p_real[None, :]
    g, p = (iou > 0.5).nonzero(as_tuple=True)
    t_free = t_real.clone()
    t_free[g] = False
    p_free = p_real.clone()
    p_free[p] = False
    p_free &= ~(on_void / area_p > 0.5)
    return {"target_ids": t_ids[g], "pred_ids": p_ids[p], "iou": iou[g, p],
            "fn": int(t_free.sum()), "fp": int(p_free.sum())}
