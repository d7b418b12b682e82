"""Input checks shared by the losses."""

from __future__ import annotations

import torch

from utils.data.contract import check_integer, check_labels


def check_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index):
    """Validate ``logits [B, C, ...]`` against ``target [B, ...]``; return the
    mask of counted pixels and the target with ignored pixels set to 0 (so that
    it can index)."""
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    check_integer(target, "target")
    if logits.ndim != target.ndim + 1 or (
        logits.shape[:1] + logits.shape[2:] != target.shape
    ):
        raise ValueError(
            f"logits must be [B, C, ...] for a target [B, ...]; got logits "
            f"{list(logits.shape)} and target {list(target.shape)}"
        )
    C = logits.shape[1]
    check_labels(target, C, ignore_index, "target")
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(
        target, dtype=torch.bool)
    return valid, torch.where(valid, target, 0).long()


def reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: str):
    """Mean over the counted pixels (0 when none is counted, so that a batch
    that is all ignore does not give NaN), sum, or the per-pixel map."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp(min=1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def per_class(values, like: torch.Tensor, name: str) -> torch.Tensor:
    """``values`` as a ``[C]`` tensor on ``like``'s device and dtype, where
    ``C = like.shape[1]`` is the number of classes of the logits ``like``."""
    values = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if values.shape != (like.shape[1],):
        raise ValueError(
            f"{name} must be [C] = [{like.shape[1]}], got {list(values.shape)}"
        )
    return values
