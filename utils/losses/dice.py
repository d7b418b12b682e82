"""Soft Dice loss over classes (chapter 01).

Per class c, with soft predictions ``p = softmax(logits)`` and one-hot targets
``g`` summed over every counted pixel of the batch:

    Dice_c = (2 sum(p g) + s) / (sum(p) + sum(g) + s)          (plain)
    Dice_c = (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)      (squared, V-Net)

and the loss is ``1 - mean_c Dice_c``. The smoothing ``s`` keeps a class that
is neither present nor predicted at Dice 1 instead of 0/0.
"""

from __future__ import annotations

import torch.nn.functional as F

from utils.data import IGNORE_INDEX
from utils.losses._inputs import check_inputs


def dice_loss(logits, target, ignore_index: int | None = IGNORE_INDEX,
              squared: bool = False, smooth: float = 1.0):
    """``1 - mean_c Dice_c`` of ``logits [B, C, ...]`` against ``target [B, ...]``;
    ignored pixels count in neither ``p`` nor ``g``."""
    valid, t = check_inputs(logits, target, ignore_index)
    C = logits.shape[1]
    mask = valid.unsqueeze(1).float()  # (B, 1, ...)
    p = F.softmax(logits.float(), dim=1) * mask  # (B, C, ...)
    g = F.one_hot(t, C).movedim(-1, 1).float() * mask  # (B, C, ...)
    dims = [0] + list(range(2, logits.ndim))  # every dimension but the class
    intersection = (p * g).sum(dims)  # (C,)
    if squared:
        denominator = (p * p).sum(dims) + (g * g).sum(dims)
    else:
        denominator = p.sum(dims) + g.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()
