"""Marker-based watershed by priority flood (chapter 10).

Read a grey image as a landscape (a height ``surface[y, x]``, usually the
gradient magnitude, so that edges are ridges). Pierce a hole at every
*marker* and let water rise: each basin floods from its marker, and where two
floods would meet the ridge between them is the boundary. Meyer's flooding
algorithm ("Topographic distance and watershed lines", Signal Processing
1994; Beucher & Meyer 1993) does this with a priority queue:

1. put every marker pixel in the queue, with its height as priority;
2. pop the lowest pixel; each unlabelled neighbour takes its label and
   enters the queue with its own height;
3. repeat until the queue is empty.

Pixels pop in order of height, so a basin spreads over everything below its
lowest pass before water crosses a ridge. Ties pop in the order they were
pushed (first in, first out), which makes the result deterministic and grows
plateaus evenly from their edges.

Deviations from the paper: no one-pixel watershed lines; every pixel the
flood reaches gets a basin's label (as scikit-image's default). A ``mask``
keeps the flood inside a region (pixels outside get 0).
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

from utils.classical.region_growing import EIGHT, FOUR


def watershed(surface: torch.Tensor, markers: torch.Tensor, mask=None,
              connectivity: int = 4) -> torch.Tensor:
    """Flood ``surface`` (``float [H, W]``) from ``markers`` (``int64 [H, W]``,
    0 = not a marker, 1..R = the basins' labels); returns ``int64 [H, W]``
    labels, 0 only outside ``mask`` (bool ``[H, W]``, default everywhere) or
    where no marker's flood can reach."""
    if not isinstance(surface, torch.Tensor) or surface.ndim != 2:
        raise ValueError(f"surface must be a [H, W] tensor, got "
                         f"{list(getattr(surface, 'shape', []))}")
    if not isinstance(markers, torch.Tensor) or markers.dtype != torch.int64 \
            or markers.shape != surface.shape:
        raise ValueError(f"markers must be int64 {list(surface.shape)} like the "
                         f"surface, got {getattr(markers, 'dtype', None)} "
                         f"{list(getattr(markers, 'shape', []))}")
    if markers.numel() and markers.min() < 0:
        raise ValueError("markers must be >= 0 (0 = not a marker)")
    offsets = {4: FOUR, 8: EIGHT}.get(connectivity)
    if offsets is None:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    H, W = surface.shape
    inside = np.ones(H * W, bool) if mask is None else \
        torch.as_tensor(mask, dtype=torch.bool).reshape(-1).numpy().copy()
    if inside.size != H * W:
        raise ValueError(f"mask must be [H, W] = {[H, W]}")
    # Plain Python lists: indexing them is several times faster than NumPy
    # scalars in a loop that touches every pixel.
    height = surface.double().flatten().tolist()
    labels = (markers.flatten() * torch.from_numpy(inside)).tolist()
    allowed = inside.tolist()
    queue, age = [], 0  # age breaks ties first in, first out
    for p, label in enumerate(labels):
        if label:
            queue.append((height[p], age, p))
            age += 1
    heapq.heapify(queue)
    steps = [(dy * W + dx, dy, dx) for dy, dx in offsets]
    while queue:
        _, _, p = heapq.heappop(queue)
        y, x = divmod(p, W)
        label = labels[p]
        for step, dy, dx in steps:
            if not (0 <= y + dy < H and 0 <= x + dx < W):
                continue
            q = p + step
            if labels[q] == 0 and allowed[q]:
                labels[q] = label
                heapq.heappush(queue, (height[q], age, q))
                age += 1
    return torch.tensor(labels, dtype=torch.int64).view(H, W)
