"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection",
https://arxiv.org/abs/1708.02002), in its softmax form for segmentation
(chapter 01).

``FL = -alpha_t (1 - p_t)^gamma log p_t``: the factor ``(1 - p_t)^gamma``
shrinks the loss of pixels the network already gets right (``p_t`` near 1),
so the many easy pixels stop drowning out the few hard ones. ``gamma = 0``
and no ``alpha`` give cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.data import IGNORE_INDEX
from utils.losses._inputs import check_inputs, per_class, reduce


def focal_loss(logits, target, gamma: float = 2.0, alpha=None,
               ignore_index: int | None = IGNORE_INDEX, reduction: str = "mean"):
    """Focal loss of ``logits [B, C, ...]`` against ``target [B, ...]``.

    ``alpha`` (optional, ``[C]``) weights each pixel by its true class. The mean
    divides by the number of counted pixels, not by the summed ``alpha``, as
    RetinaNet normalises by the number of anchors.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    valid, t = check_inputs(logits, target, ignore_index)
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = log_p.gather(1, t.unsqueeze(1)).squeeze(1)  # (B, ...)
    loss = -log_pt
    if gamma > 0:
        # 1 - p_t as -expm1(log p_t) stays accurate for p_t near 1. The floor
        # keeps d/dx x^gamma finite at x = 0 when gamma < 1 (else 0 * inf = NaN).
        one_minus_pt = (-torch.expm1(log_pt)).clamp(min=torch.finfo(loss.dtype).eps)
        loss = loss * one_minus_pt**gamma
    if alpha is not None:
        loss = loss * per_class(alpha, log_p, "alpha")[t]
    return reduce(loss * valid, valid, reduction)
