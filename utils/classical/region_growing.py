"""Region growing from seeds (chapter 10).

Start from a few labelled seed pixels and let each region swallow the
neighbouring pixels whose colour is close to the region's mean colour, until
no region can grow. This is the idea of seeded region growing (Adams &
Bischof, "Seeded region growing", IEEE TPAMI 1994).

One **step** grows every region by one ring of pixels at once:

1. each region's mean colour, over the pixels it holds now;
2. each unlabelled pixel with a labelled 4-neighbour (or 8-neighbour) is a
   candidate for the region of that neighbour; its distance is the Euclidean
   distance between its colour and the region's mean;
3. a candidate of several regions goes to the nearest one (at equal distance,
   the smaller label), and joins it if that distance is <= ``threshold``.

Deviations from the paper: Adams & Bischof add one pixel at a time from a
priority queue and update the mean after each; here a whole ring joins per
step (vectorised, and a step is a unit one can check), and a pixel that is
too far from every region stays unlabelled instead of joining the nearest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.classical._threads import single_threaded

FOUR = ((-1, 0), (1, 0), (0, -1), (0, 1))
EIGHT = FOUR + ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _as_channels(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating-point tensor [H, W] or "
                        f"[C, H, W], got {getattr(image, 'dtype', type(image))}")
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W] or [C, H, W], got {list(image.shape)}")
    return image


def _check_labels(labels: torch.Tensor, image: torch.Tensor) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise TypeError(f"labels must be an int64 tensor, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != image.shape[-2:]:
        raise ValueError(f"labels {list(labels.shape)} must be [H, W] like the "
                         f"image {list(image.shape)}")
    if labels.numel() and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 = unlabelled, 1..R = regions)")


def neighbours(labels: torch.Tensor, offsets=FOUR) -> torch.Tensor:
    """``[len(offsets), H, W]``: for each offset ``(dy, dx)``, the label of the
    pixel at ``(y + dy, x + dx)`` (0 outside the image)."""
    H, W = labels.shape
    padded = F.pad(labels, (1, 1, 1, 1))
    return torch.stack([padded[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
                        for dy, dx in offsets])


def region_means(image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[R + 1, C]``: the mean colour of each region ``1..R`` (row 0, the
    unlabelled pixels, is not a region and holds their mean)."""
    image = _as_channels(image)
    regions = int(labels.max()) + 1
    flat = labels.flatten()
    count = torch.bincount(flat, minlength=regions).to(image.dtype)
    sums = torch.zeros(regions, image.shape[0], dtype=image.dtype)
    sums.index_add_(0, flat, image.flatten(1).T)
    return sums / count.clamp(min=1)[:, None]


def grow_step(image: torch.Tensor, labels: torch.Tensor, threshold: float,
              connectivity: int = 4) -> torch.Tensor:
    """One step of region growing: ``labels`` (``int64 [H, W]``, 0 =
    unlabelled) with every candidate pixel that is within ``threshold`` of its
    nearest neighbouring region's mean colour added to that region (see the
    module's docstring). ``image`` is ``[C, H, W]`` or ``[H, W]``."""
    image = _as_channels(image)
    _check_labels(labels, image)
    offsets = {4: FOUR, 8: EIGHT}.get(connectivity)
    if offsets is None:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    means = region_means(image, labels)  # (R + 1, C)
    nb = neighbours(labels, offsets)  # (D, H, W): the region each neighbour is in
    diff = image[None] - means[nb].permute(0, 3, 1, 2)  # (D, C, H, W)
    distance = diff.pow(2).sum(1).sqrt()  # (D, H, W)
    distance = torch.where(nb > 0, distance, torch.inf)  # no region there
    nearest = distance.min(0).values  # (H, W)
    # Among the neighbours at the nearest distance, the smallest label.
    at_nearest = (distance == nearest) & (nb > 0)
    big = torch.iinfo(torch.int64).max
    winner = torch.where(at_nearest, nb, big).min(0).values  # (H, W)
    joins = (labels == 0) & (nearest <= threshold)
    return torch.where(joins, winner, labels)


@single_threaded
def region_grow(image: torch.Tensor, seeds: torch.Tensor, threshold: float,
                connectivity: int = 4, max_steps: int | None = None
                ) -> torch.Tensor:
    """Grow the regions of ``seeds`` (``int64 [H, W]``: 0 = unlabelled, 1..R
    the seeds of region 1..R) by :func:`grow_step` until no pixel joins (or
    ``max_steps`` steps); returns ``int64 [H, W]`` with 0 where no region
    reached."""
    image = _as_channels(image)
    _check_labels(seeds, image)
    labels = seeds
    steps = max_steps if max_steps is not None else labels.numel()
    for _ in range(steps):
        grown = grow_step(image, labels, threshold, connectivity)
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels
