"""The data contract's label checks, in one place (every dataset, loss, metric
and the training loop use them).

A label map is an integer tensor whose values are class ids in
``[0, num_classes)`` or the ignore index (255 by default,
:data:`utils.data.IGNORE_INDEX`); anything else is a bug in a dataset's label
mapping, and the error says which values were found.
"""

from __future__ import annotations

import torch


def check_integer(labels: torch.Tensor, name: str = "labels") -> None:
    """``labels`` must be an integer tensor (not float, bool or complex)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or (
        labels.dtype == torch.bool
    ):
        raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index=None,
                 name: str = "labels",
                 hint: str = "check the dataset's label mapping") -> None:
    """Every value of ``labels`` lies in ``[0, num_classes)`` or equals
    ``ignore_index`` (``None``: no value is ignored); else a ``ValueError``
    naming up to ten offending values."""
    check_integer(labels, name)
    if labels.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(labels))
    if lo >= 0 and hi < num_classes:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bad.any():
        values = labels[bad].unique()[:10].tolist()
        allowed = f"[0, {num_classes})"
        if ignore_index is not None:
            allowed += f" or the ignore index {ignore_index}"
        raise ValueError(f"{name} has labels {values}, expected {allowed}"
                         + (f"; {hint}" if hint else ""))
