"""The confusion matrix and every semantic-segmentation metric read off it.

Rows are the true class, columns the predicted class. Accumulating one matrix
over the whole dataset and reading the metrics at the end gives the
dataset-level numbers that papers report; averaging per-batch mIoU does not.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """Accumulates ``int64 [C, C]`` counts; pixels whose target is
    ``ignore_index`` do not count."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device=None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} collides with a class id in "
                f"[0, {num_classes})"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64,
                                  device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch. ``pred`` is labels shaped like ``target`` or logits
        ``[B, C, H, W]`` for a ``target`` of ``[B, H, W]``."""
        C = self.num_classes
        if target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"target must hold integer labels, got {target.dtype}")
        if pred.is_floating_point():
            if pred.ndim != target.ndim + 1 or pred.shape[1] != C or (
                pred.shape[:1] + pred.shape[2:] != target.shape
            ):
                raise ValueError(
                    f"logits must be [B, {C}, ...] for a target of {list(target.shape)}, "
                    f"got {list(pred.shape)}"
                )
            pred = pred.argmax(dim=1)
        elif pred.dtype == torch.bool:
            raise ValueError("pred must be integer labels or float logits, got bool")
        if pred.shape != target.shape:
            raise ValueError(
                f"pred {list(pred.shape)} and target {list(target.shape)} differ in shape"
            )
        target = target.to(self.matrix.device)
        pred = pred.to(self.matrix.device)
        valid = target != self.ignore_index
        t, p = target[valid].long(), pred[valid].long()
        _check_range("target", t, C, self.ignore_index)
        _check_range("pred", p, C, None)
        counts = torch.bincount(t * C + p, minlength=C * C)
        self.matrix += counts.reshape(C, C)

    def compute(self) -> dict:
        """Metrics of the accumulated matrix.

        Per-class tensors (``iou``, ``dice``, ``class_accuracy``) are NaN for a
        class that neither occurs nor is predicted; the means skip NaN.
        """
        m = self.matrix.double()
        tp = m.diag()
        gt = m.sum(dim=1)  # pixels of each true class
        pr = m.sum(dim=0)  # pixels predicted as each class
        total = m.sum()
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=m.device)
        class_acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
        union = gt + pr - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        dice = torch.where(gt + pr > 0, 2 * tp / (gt + pr).clamp(min=1), nan)
        freq = gt / total if total > 0 else gt
        return {
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_pixel_accuracy": float(class_acc.nanmean()),
            "class_accuracy": class_acc,
            "iou": iou,
            "mean_iou": float(iou.nanmean()),
            "fw_iou": float((freq[gt > 0] * iou[gt > 0]).sum()) if total > 0
            else float("nan"),
            "dice": dice,
            "mean_dice": float(dice.nanmean()),
        }

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError("can only add confusion matrices with the same classes")
        out = ConfusionMatrix(self.num_classes, self.ignore_index, self.matrix.device)
        out.matrix = self.matrix + other.matrix.to(self.matrix.device)
        return out

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrices of all DDP ranks in place (no-op without DDP)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self


def _check_range(name, labels, num_classes, ignore_index):
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)].unique()[:10].tolist()
        allowed = f"[0, {num_classes})"
        if ignore_index is not None:
            allowed += f" or ignore_index {ignore_index}"
        raise ValueError(f"{name} has labels {bad} outside {allowed}")
