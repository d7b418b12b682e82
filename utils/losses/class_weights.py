"""Class weights from pixel frequencies (chapter 01; SegNet's median-frequency
balancing in chapter 05).

Both give 0 to a class that never occurs: it has no pixel to weight.
"""

from __future__ import annotations

import torch

from utils.data import IGNORE_INDEX
from utils.data.contract import check_integer, check_labels


def class_pixel_counts(labels: torch.Tensor, num_classes: int,
                       ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """``int64 [N, C]``: pixels of each class in each of the ``N`` label maps
    ``labels [N, ...]``; ``ignore_index`` pixels are not counted."""
    check_integer(labels, "labels")
    if labels.ndim < 1:
        raise ValueError("labels must be [N, ...], got a scalar")
    labels = labels.reshape(len(labels), -1).long()
    N, C = labels.shape[0], num_classes
    valid = labels != ignore_index if ignore_index is not None else torch.ones_like(
        labels, dtype=torch.bool)
    check_labels(labels, C, ignore_index, "labels")
    image = torch.arange(N, device=labels.device).unsqueeze(1)
    idx = torch.where(valid, image * C + labels, N * C)
    return torch.bincount(idx.reshape(-1), minlength=N * C + 1)[: N * C].reshape(N, C)


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """``w_c = n / (K n_c)`` from pixel counts ``[C]`` or ``[N, C]`` (summed over
    images), with ``n`` all counted pixels and ``K`` the classes that occur: the
    weighted pixels then average 1, and every class carries the same total
    weight."""
    counts = counts.reshape(-1, counts.shape[-1]).sum(0).double()
    present = counts > 0
    K = present.sum().clamp(min=1)
    return torch.where(present, counts.sum() / (K * counts.clamp(min=1)), 0.0)


def median_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """SegNet's ``w_c = median(f) / f_c`` from per-image counts ``[N, C]``.

    ``f_c`` is the pixels of class c divided by the pixels of the images in
    which c occurs (Eigen & Fergus); the median (the mean of the two middle
    values for an even number) is over the classes that occur.
    """
    if counts.ndim != 2:
        raise ValueError(f"counts must be per image, [N, C]; got {list(counts.shape)}")
    counts = counts.double()
    per_image = counts.sum(1, keepdim=True)  # (N, 1)
    occurs = counts > 0
    seen_pixels = (per_image * occurs).sum(0)  # pixels of images where c occurs
    present = seen_pixels > 0
    freq = torch.where(present, counts.sum(0) / seen_pixels.clamp(min=1), 0.0)
    if not present.any():
        return torch.zeros_like(freq)
    median = torch.quantile(freq[present], 0.5)
    return torch.where(present, median / freq.clamp(min=1e-300), 0.0)
