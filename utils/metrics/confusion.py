"""The confusion matrix and every semantic-segmentation metric read off it
(derived in chapter 01).

Rows are the true class, columns the predicted class. Accumulating one matrix
over the whole dataset and reading the metrics at the end gives the
dataset-level numbers that papers report; averaging per-image or per-batch mIoU
does not (:func:`per_image_confusion` gives the per-image matrices for the
comparison).

Conventions, the ones of the FCN evaluation code that most papers use:

- pixels whose *target* is ``ignore_index`` do not count, whatever the
  prediction there;
- a class absent from both target and prediction has IoU and Dice NaN and is
  left out of the means; a class that is predicted but absent from the target
  has IoU 0 and is included;
- mean pixel accuracy averages over the classes present in the target;
- frequency-weighted IoU weights each class's IoU by its share of the counted
  target pixels.
"""

from __future__ import annotations

import torch

from utils.data import IGNORE_INDEX
from utils.data.contract import check_integer, check_labels
from utils.metrics.reduce import all_reduce_sum_

_PRED = "pred"  # checked where the target is not ignored

# Above this many bins the fast path's histogram (which also counts the ignored
# target values) would be wasteful; the masked path is used instead.
_MAX_FAST_BINS = 1 << 22


class ConfusionMatrix:
    """Accumulates ``int64 [C, C]`` counts in ``.matrix`` (rows: target, columns:
    prediction); pixels whose target is ``ignore_index`` do not count.

    ``device`` is where ``.matrix`` lives; each update is counted on the device
    of its tensors and only the ``C x C`` counts move. ``ignore_index=None``
    counts every pixel.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX,
                 device=None):
        _check_num_classes(num_classes)
        _check_ignore_index(ignore_index, num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(
            (num_classes, num_classes), dtype=torch.int64, device=device
        )
        self._index = None  # scratch space of update(), see there

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        ``pred`` is integer labels shaped like ``target`` (any shape), or float
        logits ``[B, C, ...]`` for a ``target`` of ``[B, ...]`` (argmax over
        dim 1). Labels must lie in ``[0, C)``; the target may also hold
        ``ignore_index``, and the prediction is not looked at where it does.
        """
        pred, target = _labels(pred, target, self.num_classes)
        n = target.numel()
        # The per-pixel bin index is written into a buffer kept between updates:
        # on the CPU, allocating a fresh 8-byte-per-pixel tensor (page faults)
        # costs more than the arithmetic and the bincount together.
        if self._index is None or self._index.numel() < n or (
            self._index.device != target.device
        ):
            self._index = torch.empty(n, dtype=torch.int64, device=target.device)
        counts = _counts(pred.reshape(-1), target.reshape(-1), self.num_classes,
                         self.ignore_index, self._index[:n])
        self.matrix += counts.to(self.matrix.device)

    def compute(self) -> dict:
        """Metrics of the accumulated matrix: floats ``pixel_accuracy``,
        ``mean_pixel_accuracy``, ``mean_iou``, ``fw_iou``, ``mean_dice`` and
        float64 ``[C]`` tensors ``class_accuracy``, ``iou``, ``dice`` (NaN for a
        class that the means skip, see the module docstring). With no pixel
        counted yet every number is NaN.
        """
        out = metrics_from_matrix(self.matrix)
        return {k: (float(v) if v.ndim == 0 else v) for k, v in out.items()}

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrices of all DDP ranks in place (no-op without DDP)."""
        all_reduce_sum_(self.matrix)
        return self

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, pixels={int(self.matrix.sum())})"
        )


@torch.no_grad()
def confusion_matrix(pred, target, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX):
    """``int64 [C, C]`` counts of one batch (see :meth:`ConfusionMatrix.update`
    for the inputs), computed with one ``bincount`` on ``target``'s device."""
    _check_num_classes(num_classes)
    _check_ignore_index(ignore_index, num_classes)
    pred, target = _labels(pred, target, num_classes)
    return _counts(pred.reshape(-1), target.reshape(-1), num_classes, ignore_index)


@torch.no_grad()
def per_image_confusion(pred, target, num_classes: int,
                        ignore_index: int | None = IGNORE_INDEX):
    """``int64 [B, C, C]``: one confusion matrix per image of a batch.

    Inputs as for :func:`confusion_matrix`, with the first dimension the image.
    Feed the result to :func:`metrics_from_matrix` for per-image metrics.
    """
    _check_num_classes(num_classes)
    _check_ignore_index(ignore_index, num_classes)
    pred, target = _labels(pred, target, num_classes)
    if target.ndim == 0:
        raise ValueError("per_image_confusion needs a batch dimension, got a scalar")
    B, C = target.shape[0], num_classes
    # Give every image its own block of C*C bins: one bincount does them all.
    image = torch.arange(B, device=target.device).view(-1, *[1] * (target.ndim - 1))
    valid = _valid(target, ignore_index)
    check_labels(target, C, ignore_index, "target")
    check_labels(pred[valid], C, None, _PRED, hint="")
    idx = torch.where(valid, image * (C * C) + target * C + pred, B * C * C)
    counts = torch.bincount(idx.reshape(-1), minlength=B * C * C + 1)
    return counts[: B * C * C].reshape(B, C, C)


def metrics_from_matrix(matrix: torch.Tensor) -> dict:
    """Every metric of a confusion matrix ``[..., C, C]`` (rows: target) as
    float64 tensors: per-class ``[..., C]`` for ``class_accuracy``, ``iou``,
    ``dice``; ``[...]`` for the rest. Conventions in the module docstring."""
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"expected a [..., C, C] matrix, got {list(matrix.shape)}")
    m = matrix.double()
    tp = m.diagonal(dim1=-2, dim2=-1)
    gt = m.sum(dim=-1)  # pixels of each true class
    pr = m.sum(dim=-2)  # pixels predicted as each class
    total = gt.sum(dim=-1)
    nan = torch.full_like(tp, float("nan"))
    class_acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    union = gt + pr - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    dice = torch.where(gt + pr > 0, 2 * tp / (gt + pr).clamp(min=1), nan)
    counted = total > 0
    pixel_acc = torch.where(counted, tp.sum(-1) / total.clamp(min=1), float("nan"))
    freq = gt / total.clamp(min=1).unsqueeze(-1)
    # A class absent from the target has weight 0, even where its IoU is 0.
    fw_iou = torch.where(gt > 0, freq * iou.nan_to_num(0.0), 0.0).sum(-1)
    return {
        "pixel_accuracy": pixel_acc,
        "mean_pixel_accuracy": class_acc.nanmean(dim=-1),
        "class_accuracy": class_acc,
        "iou": iou,
        "mean_iou": iou.nanmean(dim=-1),
        "fw_iou": torch.where(counted, fw_iou, float("nan")),
        "dice": dice,
        "mean_dice": dice.nanmean(dim=-1),
    }


def _check_num_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or (
        num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _check_ignore_index(ignore_index, num_classes: int) -> None:
    if ignore_index is None:
        return
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index {ignore_index} collides with a class id in "
            f"[0, {num_classes})"
        )


def _labels(pred: torch.Tensor, target: torch.Tensor, C: int):
    """Check shapes and dtypes; return int64 labels on ``target``'s device."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"pred and target must be tensors, got {type(pred).__name__} and "
            f"{type(target).__name__}"
        )
    check_integer(target, "target")
    if pred.is_floating_point():
        if pred.shape == target.shape:
            raise ValueError(
                f"pred is {pred.dtype} with the target's shape {list(target.shape)}: "
                "labels must be an integer dtype (or pass logits [B, C, ...])"
            )
        if pred.ndim != target.ndim + 1 or pred.shape[1] != C or (
            pred.shape[:1] + pred.shape[2:] != target.shape
        ):
            raise ValueError(
                f"logits must be [B, {C}, ...] for a target of {list(target.shape)}, "
                f"got {list(pred.shape)}"
            )
        # max(dim).indices is argmax (first maximum) but about twice as fast on
        # the CPU for a reduction over a middle dimension.
        pred = pred.max(dim=1).indices
    elif pred.is_complex() or pred.dtype == torch.bool:
        raise ValueError(
            f"pred must be integer labels or float logits, got {pred.dtype}"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {list(pred.shape)} and target {list(target.shape)} differ in shape"
        )
    pred = pred.to(device=target.device, dtype=torch.int64)
    return pred, target.to(torch.int64)


def _valid(target, ignore_index):
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def _counts(pred, target, C: int, ignore_index, buffer=None) -> torch.Tensor:
    """``[C, C]`` counts of flat int64 labels (one bincount); ``buffer``, if
    given, is int64 scratch space with one element per pixel."""
    if target.numel() == 0:
        return torch.zeros((C, C), dtype=torch.int64, device=target.device)
    t_lo, t_hi = (int(v) for v in torch.aminmax(target))
    p_lo, p_hi = (int(v) for v in torch.aminmax(pred))
    if p_lo >= 0 and p_hi < C and t_lo >= 0 and (t_hi + 1) * C <= _MAX_FAST_BINS:
        # Fast path, no masking: an ignored target t >= C lands in bin t*C + p
        # >= C*C, past the matrix. Those bins also tell which target values
        # >= C occur, which is how out-of-range targets are caught.
        index = torch.add(pred, target, alpha=C, out=buffer)
        counts = torch.bincount(index,
                                minlength=max(t_hi + 1, C) * C)
        rows = counts[C * C:].reshape(-1, C).sum(dim=1)  # target values C, C+1...
        bad = (rows.nonzero().flatten() + C).tolist()
        if any(v != ignore_index for v in bad):
            check_labels(target, C, ignore_index, "target")  # raises, naming them
        return counts[: C * C].reshape(C, C)
    valid = _valid(target, ignore_index)
    t, p = target[valid], pred[valid]
    check_labels(target, C, ignore_index, "target")
    check_labels(p, C, None, _PRED, hint="")
    return torch.bincount(t * C + p, minlength=C * C).reshape(C, C)
