"""U-Net's border weight map (chapter 04).

Ronneberger, Fischer & Brox (MICCAI 2015), Section 3: to make the network
learn the thin background borders between touching cells, each pixel's loss
is weighted by

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

where ``w_c`` balances the class frequencies, ``d1`` and ``d2`` are the
distances to the border of the nearest and the second-nearest cell, and the
paper sets ``w0 = 10`` and ``sigma ~ 5`` pixels. A background pixel squeezed
between two cells has ``d1 + d2`` about the gap's width, hence a weight near
``1 + w0``; one far from any pair of cells keeps ``w_c``.

- :func:`separation_target`: the training target with the paper's separation
  borders, background pixels between touching objects;
- :func:`instance_distances`: ``d1`` and ``d2`` for every pixel, exact
  Euclidean distances (between pixel centres, to the nearest pixel of each
  object) computed by brute force on the objects' outlines;
- :func:`border_weights`: the exponential term;
- :func:`unet_weight_map`: ``w`` for a (batch of) binary target(s), used with
  :func:`utils.losses.pixel_weighted_cross_entropy`.

The border term is put on background pixels only: inside a cell ``d1 = 0``
and the term would only repeat the cell's distance to its neighbour, while the
pixels the network gets wrong are the gaps (the paper's Figure 3d shows the
weights there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from utils.losses.class_weights import class_pixel_counts, inverse_frequency_weights
from utils.metrics.instances import connected_components

W0 = 10.0  # the paper's w0
SIGMA = 5.0  # the paper's sigma, pixels


def _check_instances(instances: torch.Tensor) -> None:
    if not isinstance(instances, torch.Tensor) or instances.ndim != 2 or \
            instances.is_floating_point():
        raise ValueError(f"instances must be an integer map [H, W] (0 = background, "
                         f"k > 0 = object k), got {getattr(instances, 'dtype', None)} "
                         f"{list(getattr(instances, 'shape', []))}")
    if (instances < 0).any():
        raise ValueError("instance ids must be >= 0 (0 = background)")


def separation_target(instances: torch.Tensor, ignore_index: int = 255,
                      ignore: torch.Tensor | None = None) -> torch.Tensor:
    """``int64 [H, W]``: 1 on objects, 0 on the background and on the
    separation borders, ``ignore_index`` where ``ignore`` (bool) is set.

    An object pixel is on a separation border when one of its eight neighbours
    belongs to another object; both sides of a contact are cleared, so the
    objects left are apart in the 8-neighbourhood and their 4-connected
    components (:func:`utils.metrics.instances.connected_components`) give
    them back one by one.
    """
    _check_instances(instances)
    inst = instances.long()
    H, W = inst.shape
    # Largest and smallest object id around each pixel (background excluded):
    # they differ exactly where two objects meet within the 3x3 window.
    big = int(inst.max()) + 1
    high = F.max_pool2d(inst[None, None].float(), 3, 1, 1)[0, 0]
    low = -F.max_pool2d(-torch.where(inst > 0, inst, big)[None, None].float(),
                        3, 1, 1)[0, 0]
    border = (inst > 0) & (high != low)
    target = (inst > 0).long()
    target[border] = 0
    if ignore is not None:
        target[ignore] = ignore_index
    return target


def instance_distances(instances: torch.Tensor, k: int = 2) -> torch.Tensor:
    """``float32 [k, H, W]``: for every pixel the Euclidean distance (pixel
    centre to pixel centre) to the nearest pixel of its nearest, second-nearest,
    ..., k-th nearest object; ``inf`` where fewer than ``k`` objects exist. An
    object's own pixels are at distance 0 from it.

    The nearest pixel of an object to a pixel outside it lies on the object's
    outline (a step towards the pixel along its longer axis would otherwise
    stay inside the object and come closer), so the distances are taken to the
    outline pixels only: exact, and cheap for cell-like objects.
    """
    _check_instances(instances)
    inst = instances.long()
    H, W = inst.shape
    ids = torch.unique(inst[inst > 0])
    out = torch.full((k, H, W), math.inf)
    if len(ids) == 0:
        return out
    # outline: object pixels with a 4-neighbour outside the object (or the edge)
    p = F.pad(inst, (1, 1, 1, 1), value=-1)
    inner = (p[1:-1, :-2] == inst) & (p[1:-1, 2:] == inst) & \
        (p[:-2, 1:-1] == inst) & (p[2:, 1:-1] == inst)
    outline = (inst > 0) & ~inner
    ys, xs = torch.nonzero(outline, as_tuple=True)
    which = torch.searchsorted(ids, inst[ys, xs])  # object of each outline pixel
    grid = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W),
                                      indexing="ij"), -1).view(-1, 2).float()
    points = torch.stack([ys, xs], 1).float()
    dist = torch.cdist(grid[None], points[None])[0]  # (HW, M)
    per_object = torch.stack([dist[:, which == j].amin(1) for j in range(len(ids))])
    # inside an object its distance is 0 (its interior has no outline pixel)
    on = inst.view(-1) > 0
    per_object[torch.searchsorted(ids, inst.view(-1)[on]), on.nonzero()[:, 0]] = 0.0
    m = min(k, len(ids))
    out[:m] = per_object.topk(m, dim=0, largest=False).values.view(m, H, W)
    return out


def border_weights(instances: torch.Tensor, w0: float = W0,
                   sigma: float = SIGMA) -> torch.Tensor:
    """``float32 [H, W]``: ``w0 exp(-(d1 + d2)^2 / (2 sigma^2))`` on background
    pixels (0 on objects, and everywhere when there are fewer than two)."""
    if not w0 >= 0 or not sigma > 0:
        raise ValueError(f"need w0 >= 0 and sigma > 0, got w0={w0}, sigma={sigma}")
    d1, d2 = instance_distances(instances, 2)
    term = w0 * torch.exp(-((d1 + d2) ** 2) / (2 * sigma**2))  # exp(-inf) = 0
    return torch.where(instances > 0, 0.0, term)


def unet_weight_map(target: torch.Tensor, w0: float = W0, sigma: float = SIGMA,
                    ignore_index: int = 255) -> torch.Tensor:
    """U-Net's ``w(x)`` for binary targets ``int64 [H, W]`` or ``[B, H, W]``
    (0 = background and separation borders, 1 = object, ``ignore_index``).

    The objects are the 4-connected components of the class-1 pixels (the
    separation borders keep touching objects apart, see
    :func:`separation_target`). ``w_c`` is ``n / (2 n_c)`` per image, with
    ``n_c`` the pixels of class c and ``n`` all counted ones, so that the
    balanced weights average 1; ignored pixels get weight 0.
    """
    if target.ndim not in (2, 3) or target.is_floating_point():
        raise ValueError(f"target must be integer [H, W] or [B, H, W], got "
                         f"{target.dtype} {list(target.shape)}")
    t = target[None] if target.ndim == 2 else target
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t > 1))
    if bad.any():
        raise ValueError(f"unet_weight_map needs binary targets (0, 1 or "
                         f"{ignore_index}), got labels {t[bad].unique()[:10].tolist()}")
    objects = connected_components(valid & (t == 1))  # (B, H, W)
    weights = torch.zeros(t.shape)
    for b in range(len(t)):
        w_c = inverse_frequency_weights(class_pixel_counts(t[b : b + 1], 2,
                                                           ignore_index)).float()
        w = w_c[t[b].clamp(0, 1)] + border_weights(objects[b], w0, sigma)
        weights[b] = torch.where(valid[b], w, 0.0)
    return weights[0] if target.ndim == 2 else weights


def with_separation_target(image: torch.Tensor, target: torch.Tensor,
                           ignore_index: int = 255):
    """A joint transform (``image, target = t(image, target)``) that replaces a
    panoptic target ``int64 [H, W, 2]`` (category, instance id; void = category
    ``ignore_index``), such as Cells' ``task="panoptic"``, by
    :func:`separation_target` of its instances."""
    if target.ndim != 3 or target.shape[-1] != 2:
        raise ValueError(f"expected a panoptic target [H, W, 2], got "
                         f"{list(target.shape)}")
    return image, separation_target(target[..., 1], ignore_index,
                                    ignore=target[..., 0] == ignore_index)
