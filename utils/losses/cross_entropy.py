"""Cross-entropy with an ignore index, and its pixel-weighted form (chapter 01;
U-Net's border weight map in chapter 04).

Its gradient with respect to the logits of a pixel is ``softmax - one_hot``
(divided by the number of counted pixels for the mean), derived in chapter 01.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.data import IGNORE_INDEX
from utils.losses._inputs import check_inputs, per_class, reduce


def cross_entropy(logits, target, ignore_index: int | None = IGNORE_INDEX, weight=None,
                  reduction: str = "mean"):
    """``-log softmax(logits)[target]`` per pixel.

    ``weight`` (``[C]``, optional) scales each pixel's term by the weight of
    its true class; the mean then divides by the summed weights of the counted
    pixels, exactly like ``F.cross_entropy``. Unlike ``F.cross_entropy``, a
    batch with every pixel ignored gives 0, not NaN. ``reduction="none"``
    returns the ``[B, ...]`` map, 0 at ignored pixels.
    """
    valid, t = check_inputs(logits, target, ignore_index)
    log_p = F.log_softmax(logits.float(), dim=1)  # float32 even under AMP
    nll = -log_p.gather(1, t.unsqueeze(1)).squeeze(1)  # (B, ...)
    w = valid.to(nll.dtype)
    if weight is not None:
        w = w * per_class(weight, log_p, "weight")[t]
    loss = nll * w
    if reduction == "mean":
        return loss.sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)
    return reduce(loss, valid, reduction)


def pixel_weighted_cross_entropy(logits, target, pixel_weight,
                                 ignore_index: int | None = IGNORE_INDEX,
                                 reduction: str = "mean"):
    """Cross-entropy with one weight per pixel (U-Net's ``w(x)``):
    ``sum(w * ce) / (number of counted pixels)``, so that ``w = 1`` gives the
    plain mean. ``pixel_weight`` is a non-negative float tensor shaped like
    ``target``.
    """
    valid, t = check_inputs(logits, target, ignore_index)
    pixel_weight = torch.as_tensor(pixel_weight, device=logits.device)
    if pixel_weight.shape != target.shape or not pixel_weight.is_floating_point():
        raise ValueError(
            f"pixel_weight must be a float tensor shaped like target "
            f"{list(target.shape)}, got {pixel_weight.dtype} {list(pixel_weight.shape)}"
        )
    log_p = F.log_softmax(logits.float(), dim=1)
    nll = -log_p.gather(1, t.unsqueeze(1)).squeeze(1)  # (B, ...)
    return reduce(nll * pixel_weight * valid, valid, reduction)
