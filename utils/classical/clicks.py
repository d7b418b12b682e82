"""Simulated user input for the interactive methods (chapter 10).

Region growing, the marker-based watershed and graph cuts need seeds that a
user would click or scribble. To compare them with networks on many images,
the clicks are simulated from the ground truth, the same for every method:
one click on each connected region of each class, at its most interior pixel
(the maximum of the distance to the region's border), which is where a
person would click.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.classical._threads import single_threaded
from utils.classical.morphology import connected_components, distance_transform


@single_threaded
def simulated_clicks(target: torch.Tensor, min_area: int = 4,
                     ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per connected region of each class of ``target``.

    ``target`` is ``int64 [H, W]`` class ids with ``ignore_index``. Returns
    ``(seeds, classes)``: ``seeds`` ``int64 [H, W]``, 0 everywhere but one
    pixel per region (regions smaller than ``min_area`` pixels get none),
    which holds the click's number ``1..R`` (raster order of the regions
    within each class, classes in increasing order); ``classes`` ``int64
    [R + 1]``, the class of each click (entry 0 unused, -1).
    """
    if target.ndim != 2 or target.is_floating_point():
        raise ValueError(f"target must be int64 [H, W], got {target.dtype} "
                         f"{list(target.shape)}")
    H, W = target.shape
    seeds = torch.zeros(H, W, dtype=torch.int64)
    classes = [-1]
    for c in target.unique().tolist():
        if c == ignore_index:
            continue
        regions = connected_components(target == c, 4)
        for r in range(1, int(regions.max()) + 1):
            region = regions == r
            if int(region.sum()) < min_area:
                continue
            depth = distance_transform(region)
            # Out-of-image pixels do not count as border: a region along the
            # image's edge would be clicked on that edge. Count them.
            depth = torch.minimum(depth, _distance_to_frame(H, W))
            flat = torch.where(region, depth, -1.0).flatten()
            seeds.view(-1)[int(flat.argmax())] = len(classes)
            classes.append(c)
    return seeds, torch.tensor(classes, dtype=torch.int64)


def _distance_to_frame(height: int, width: int) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None]
    return torch.minimum(torch.minimum(ys + 1, height - ys),
                         torch.minimum(xs + 1, width - xs))


def scribbles(seeds: torch.Tensor, classes: torch.Tensor, target: torch.Tensor,
              radius: int = 1) -> torch.Tensor:
    """The clicks grown into small square strokes that stay inside their
    class: ``int64 [H, W]`` with each click's number on the pixels within
    ``radius`` (chessboard distance) of it whose ``target`` class is the
    click's (where two strokes meet, the larger number wins)."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    grown = F.max_pool2d(seeds[None, None].double(), 2 * radius + 1, stride=1,
                         padding=radius)[0, 0].long()
    return torch.where(classes[grown] == target, grown, torch.zeros_like(grown))
