"""Non-maximum suppression (chapter 08).

A detector fires many overlapping boxes on one object. Greedy NMS keeps the
highest-scoring box, drops every remaining box whose IoU with it exceeds a
threshold, and repeats with the best box left (used for proposals in Faster
R-CNN, Ren et al. 2015, https://arxiv.org/abs/1506.01497, and for the final
detections of Mask R-CNN, He et al. 2017, https://arxiv.org/abs/1703.06870).

Semantics are those of torchvision's CPU kernel, to the last detail:

- boxes are visited in decreasing score order by a STABLE sort, so equal scores
  keep their index order;
- the IoU is computed in the boxes' dtype as ``inter / (area_i + area_j - inter)``
  and compared, like the kernel's ``float > double``, exactly against the
  threshold as a Python float: a box is dropped when ``IoU > iou_threshold``
  (equal is kept);
- a zero-area box has IoU ``0 / 0 = nan`` with another zero-area box, which
  suppresses nothing.

How it is fast in plain torch: the IoUs are computed with tensor operations, a
few rows at a time, and only between boxes still alive. What is inherently
sequential (box i's fate depends on the boxes kept before it) is a scan over
those rows: each kept box marks the alive boxes its row suppresses as removed.

Deviations from torchvision: none in the result. The scan runs on Python
integers used as bit sets, one per row of the step's IoU block: a bit
operation costs about 0.1 us against about 5 us for a torch call, and the scan
does one per kept box. On a GPU the scan runs on the CPU (the boxes are
copied there).
"""

from __future__ import annotations

import math

import torch

# Rows of the IoU matrix computed per step: enough to amortise the torch calls,
# few enough to skip the rows of boxes that earlier steps removed.
ROWS = 64
# ... and at most GRAIN IoUs per step: torch runs smaller operations on one
# thread, sparing each of them a parallel region (whose threads spin-wait and
# burn CPU when the machine is busy).
GRAIN = 1 << 18


def _float_threshold(iou_threshold: float, dtype: torch.dtype) -> torch.Tensor:
    """The largest value t of ``dtype`` with t <= ``iou_threshold``.

    For a float32 IoU, ``iou > t`` then equals the kernel's ``iou > threshold``
    taken in double precision: any float32 above t is also above the threshold.
    Comparing with ``float32(threshold)`` would differ when it rounds up (0.3 does).
    """
    t = torch.tensor(iou_threshold, dtype=dtype)
    if not math.isnan(iou_threshold) and t.item() > iou_threshold:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    return t


def _check(boxes: torch.Tensor, scores: torch.Tensor) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        got = list(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes)
        raise ValueError(f"boxes must be a tensor [N, 4] of (x1, y1, x2, y2), "
                         f"got {got}")
    if not isinstance(scores, torch.Tensor) or scores.shape != boxes.shape[:1]:
        got = list(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
        raise ValueError(f"scores must be a tensor [{boxes.shape[0]}] (one per box), "
                         f"got {got}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be floating point, got {boxes.dtype}")


def nms(boxes: torch.Tensor, scores: torch.Tensor,
        iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``float [N, 4]`` as ``(x1, y1, x2, y2)``.
        scores: ``[N]``, higher is better.
        iou_threshold: boxes with IoU ``>`` this with a kept, higher-scoring box
            are discarded.

    Returns:
        ``int64 [K]``: indices into ``boxes`` of the kept boxes, in decreasing
        score order (ties in index order).
    """
    _check(boxes, scores)
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = scores.sort(descending=True, stable=True)[1]
    x1, y1, x2, y2 = boxes.detach().cpu().index_select(0, order.cpu()).T.contiguous()
    coords = (x1, y1, x2, y2, (x2 - x1) * (y2 - y1))  # each (N,), in score order
    threshold = _float_threshold(iou_threshold, boxes.dtype)

    removed = torch.zeros(n, dtype=torch.bool)  # sorted box i was suppressed
    keep = []
    start = 0  # boxes before start are settled
    while start < n:
        # The boxes still alive from start on: all of them can be suppressed
        # (columns); the first few are the candidates of this step (rows).
        # Removed boxes need no IoU: they cannot come back.
        alive = torch.nonzero(~removed[start:]).flatten().add_(start)
        if alive.numel() == 0:
            break
        R = min(ROWS, max(GRAIN // alive.numel(), 1), alive.numel())
        rows = alive[:R]
        # index_select, not x[r]: advanced indexing costs ~100x more per call.
        bx1, by1, bx2, by2, barea = (t.index_select(0, rows)[:, None] for t in coords)
        cx1, cy1, cx2, cy2, carea = (t.index_select(0, alive) for t in coords)
        w = torch.min(bx2, cx2) - torch.max(bx1, cx1)
        h = torch.min(by2, cy2) - torch.max(by1, cy1)
        inter = w.clamp_(min=0).mul_(h.clamp_(min=0))  # (R, C)
        union = (barea + carea).sub_(inter)
        suppresses = inter.div_(union) > threshold  # (R, C), columns = alive
        # The scan itself is sequential, so it runs on Python integers used as
        # bit sets (one bit per alive column): a bit operation costs ~0.1 us,
        # a torch call ~5 us, and a step does one per kept box.
        masks = _rows_as_ints(suppresses)
        gone = 0  # bit c: alive column c was suppressed in this step
        for r, i in enumerate(rows.tolist()):  # row r is alive column r
            if gone >> r & 1:
                continue
            keep.append(i)
            # IoU is symmetric, so the columns before r that a kept box
            # "suppresses" are boxes settled already: marking them is harmless.
            gone |= masks[r]
        removed.index_fill_(0, alive.index_select(0, _int_as_indices(
            gone, alive.numel())), True)
        start = i + 1
    return order.index_select(0, torch.as_tensor(keep, dtype=torch.int64,
                                                 device=order.device))


_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def _rows_as_ints(bits: torch.Tensor) -> list[int]:
    """Each row of a bool ``[R, C]`` tensor as a Python int, bit c = column c."""
    R, C = bits.shape
    width = -(-C // 8)  # bytes per row
    padded = torch.zeros(R, width * 8, dtype=torch.uint8)
    padded[:, :C] = bits
    packed = (padded.view(R, width, 8) * _BITS).sum(-1, dtype=torch.uint8)
    raw = bytes(packed.flatten().tolist())
    return [int.from_bytes(raw[k * width:(k + 1) * width], "little")
            for k in range(R)]


def _int_as_indices(value: int, length: int) -> torch.Tensor:
    """The positions of the set bits of ``value`` below ``length``, int64."""
    width = -(-length // 8)
    raw = torch.frombuffer(bytearray(value.to_bytes(width, "little")),
                           dtype=torch.uint8)
    bits = (raw[:, None] & _BITS).ne(0).flatten()[:length]
    return torch.nonzero(bits).flatten()


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each category: boxes of different ``idxs`` never suppress each
    other.

    Args:
        boxes: ``float [N, 4]`` as ``(x1, y1, x2, y2)``.
        scores: ``[N]``.
        idxs: ``int [N]``, the category (or image) of each box.
        iou_threshold: as in :func:`nms`.

    Returns:
        ``int64 [K]``: kept indices in decreasing score order.

    As torchvision, for at most 1,000 boxes (4,000 numbers) all categories run in
    one :func:`nms` after shifting each category's boxes by ``idx * (max + 1)``
    so that categories cannot overlap (the shift can change an IoU in its last
    bits, hence the same cut-off as torchvision), and above that one
    :func:`nms` per category, the kept indices then sorted by score.
    """
    _check(boxes, scores)
    if not isinstance(idxs, torch.Tensor) or idxs.shape != scores.shape:
        got = list(idxs.shape) if isinstance(idxs, torch.Tensor) else type(idxs)
        raise ValueError(f"idxs must be a tensor [{boxes.shape[0]}], got {got}")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if boxes.numel() <= 4000:
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
        members = torch.where(idxs == class_id)[0]
        kept = nms(boxes.index_select(0, members), scores.index_select(0, members),
                   iou_threshold)
        keep_mask.index_fill_(0, members.index_select(0, kept), True)
    kept = torch.where(keep_mask)[0]
    return kept.index_select(0, scores.index_select(0, kept).sort(descending=True)[1])
