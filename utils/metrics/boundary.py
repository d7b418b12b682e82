"""Boundary IoU: IoU on a band around the true edges (chapter 03).

Mean IoU is dominated by the interiors of large regions; a network that
segments coarsely loses little there. Counting only the pixels within a few
pixels of a boundary between two classes (the "trimap" evaluation of Kohli et
al. 2009, used by DeepLab) measures how well the edges are placed.

Note: this is IoU restricted to a band around the *true* edges, not Cheng et
al.'s 2021 "Boundary IoU", which intersects the bands of both masks.
"""

from __future__ import annotations

import torch

from utils.data import IGNORE_INDEX
from utils.data.targets import edge_band
from utils.metrics.confusion import ConfusionMatrix


def boundary_band(target: torch.Tensor, width: int = 3, ignore_index: int = IGNORE_INDEX
                  ) -> torch.Tensor:
    """bool ``[B, H, W]``: pixels at most ``width`` pixels (chessboard distance)
    from the boundary between two different classes of ``target``.

    A pixel whose right or lower neighbour has another label (ignored pixels
    excepted) is on the boundary, as is that neighbour: a pixel next to an
    edge has distance 1, so the band is ``2 * width`` pixels across a straight
    edge. ``target`` is ``int64 [B, H, W]`` (or ``[H, W]``) with ``ignore_index``.
    """
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    squeeze = target.ndim == 2
    t = target[None] if squeeze else target
    if t.ndim != 3 or t.is_floating_point():
        raise ValueError(f"target must be integer [B, H, W] or [H, W], got "
                         f"{target.dtype} {list(target.shape)}")
    band = edge_band(t, width, valid=t != ignore_index)
    return band[0] if squeeze else band


def boundary_target(target: torch.Tensor, width: int = 3,
                    ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``target`` with every pixel outside :func:`boundary_band` set to
    ``ignore_index``: feed it to a :class:`ConfusionMatrix` to accumulate
    boundary IoU over a dataset."""
    band = boundary_band(target, width, ignore_index)
    return torch.where(band, target, torch.full_like(target, ignore_index))


def boundary_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                 width: int = 3, ignore_index: int = IGNORE_INDEX) -> float:
    """Mean over classes of the IoU on the band around ``target``'s edges.

    ``pred`` is labels shaped like ``target`` or logits ``[B, K, H, W]``;
    classes absent from the band in both are skipped (as in mean IoU).
    """
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(pred, boundary_target(target, width, ignore_index))
    return cm.compute()["mean_iou"]
