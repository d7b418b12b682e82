"""Binary segmentation by graph cut (chapter 10).

Boykov & Jolly, "Interactive graph cuts for optimal boundary & region
segmentation of objects in N-D images", ICCV 2001. A labelling ``x_p`` in
{0 = background, 1 = foreground} of every pixel costs

    E(x) = sum_p D_p(x_p) + lam * sum_{p~q} w_pq [x_p != x_q]

- **unaries** ``D_p(l) = -log P(I_p | l)``: how badly pixel ``p``'s colour
  fits a colour model of label ``l``, learnt from the user's scribbles (here
  a colour histogram, as the paper's intensity histograms); scribbled pixels
  are fixed to their label by a cost ``K`` larger than any cut through them;
- **contrast-sensitive Potts** pairs: neighbours with different labels pay
  ``w_pq = exp(-||I_p - I_q||^2 / (2 sigma^2)) / dist(p, q)``, little across
  a colour edge and much inside a flat region, so the boundary follows edges.
  ``2 sigma^2`` is twice the mean squared colour difference between
  neighbours (Rother et al.'s GrabCut, SIGGRAPH 2004), so ``lam`` needs no
  retuning per image.

The energy is a cut: source ``s`` = foreground, sink ``t`` = background; the
arc ``s -> p`` costs ``D_p(0)`` (cut when ``p`` ends in the background), the
arc ``p -> t`` costs ``D_p(1)``, and neighbours are joined both ways by
``lam * w_pq``. Every labelling is a cut of that capacity and back, so the
minimum cut (:func:`utils.classical.maxflow.maxflow`) is the labelling of
least energy, exactly (the Potts pairs are submodular).

Deviations from the paper: colour histograms of ``bins`` per channel with one
pseudo-count per bin instead of grey-level histograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from utils.classical._threads import single_threaded
from utils.classical.maxflow import maxflow


@dataclass(frozen=True)
class GraphCutConfig:
    """The knobs of :func:`graph_cut`."""

    lam: float = 2.0  # weight of the pairwise (boundary) term against the unaries
    bins: int = 8  # colour histogram bins per channel (bins^C colours in all)
    connectivity: int = 8  # 4 or 8 neighbours (diagonals weighted 1/sqrt 2)


def _check_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating-point tensor [C, H, W] in [0, 1]")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"image must be [C, H, W] or [H, W], got {list(image.shape)}")
    if image.min() < 0 or image.max() > 1:
        raise ValueError("image values must be in [0, 1]")
    return image


def grid_edges(height: int, width: int, connectivity: int = 4
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edges int64 [m, 2], length float64 [m])``: each pair of neighbouring
    pixels once (flat indices ``y * width + x``), with its distance (1, or
    sqrt 2 for diagonals)."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    index = torch.arange(height * width).view(height, width)
    pairs = [(index[:, :-1], index[:, 1:], 1.0), (index[:-1], index[1:], 1.0)]
    if connectivity == 8:
        pairs += [(index[:-1, :-1], index[1:, 1:], math.sqrt(2)),
                  (index[:-1, 1:], index[1:, :-1], math.sqrt(2))]
    edges = torch.cat([torch.stack([a.flatten(), b.flatten()], 1)
                       for a, b, _ in pairs])
    length = torch.cat([torch.full((a.numel(),), d, dtype=torch.float64)
                        for a, _, d in pairs])
    return edges, length


def contrast_weights(image: torch.Tensor, edges: torch.Tensor, length: torch.Tensor
                     ) -> torch.Tensor:
    """``float64 [m]``: ``w_pq = exp(-||I_p - I_q||^2 / (2 sigma^2)) / dist``,
    with ``2 sigma^2`` twice the mean of ``||I_p - I_q||^2`` over the pairs."""
    colours = _check_image(image).flatten(1).T.double()  # (N, C)
    squared = (colours[edges[:, 0]] - colours[edges[:, 1]]).pow(2).sum(1)
    two_sigma2 = 2 * squared.mean().clamp(min=1e-12)  # a flat image: any value
    return torch.exp(-squared / two_sigma2) / length


def colour_histogram_costs(image: torch.Tensor, scribble: torch.Tensor,
                           bins: int = 8) -> torch.Tensor:
    """``float64 [H, W]``: ``-log P(I_p)`` under the colour histogram of the
    pixels in ``scribble`` (bool ``[H, W]``), with one pseudo-count per bin
    so that colours the scribble never saw cost much but not infinitely."""
    image = _check_image(image)
    C = image.shape[0]
    if scribble.dtype != torch.bool or scribble.shape != image.shape[1:]:
        raise ValueError(f"scribble must be bool {list(image.shape[1:])}, got "
                         f"{scribble.dtype} {list(scribble.shape)}")
    if not scribble.any():
        raise ValueError("a scribble is empty: give at least one pixel per label")
    quantised = (image * bins).long().clamp(max=bins - 1)  # (C, H, W)
    code = torch.zeros_like(quantised[0])
    for c in range(C):
        code = code * bins + quantised[c]  # one bin index per colour
    counts = torch.bincount(code[scribble], minlength=bins**C).double() + 1
    return -torch.log(counts / counts.sum())[code]


def cut_energy(labels: torch.Tensor, unary: torch.Tensor, edges: torch.Tensor,
               weights: torch.Tensor) -> float:
    """``E(x) = sum_p unary[x_p, p] + sum_{(p, q)} weights[pq] [x_p != x_q]``
    for ``labels`` (``[N]`` or ``[H, W]``, values 0/1), ``unary``
    ``[2, N]``, one weight per edge."""
    x = labels.flatten().long()
    data = unary.flatten(1).gather(0, x[None]).sum()
    smooth = (weights * (x[edges[:, 0]] != x[edges[:, 1]])).sum()
    return float(data + smooth)


def minimise_binary_energy(unary: torch.Tensor, edges: torch.Tensor,
                           weights: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The labelling ``x`` (int64 ``[N]``, 1 = foreground) of least
    :func:`cut_energy`, and that energy, by one minimum cut. ``unary`` is
    ``[2, N]`` costs (row 0 background, row 1 foreground), ``weights`` ``[m]``
    non-negative Potts weights of ``edges``."""
    unary = unary.flatten(1).double()
    if unary.shape[0] != 2:
        raise ValueError(f"unary must be [2, N], got {list(unary.shape)}")
    if (weights < 0).any():
        raise ValueError("Potts weights must be >= 0 (the energy must be "
                         "submodular for a cut to minimise it)")
    # Only differences of unaries matter to the cut; shift each pixel's pair
    # so that the smaller is 0 (capacities >= 0, and fewer terminal arcs).
    base = unary.min(0).values
    costs = unary - base
    flow, source_side = maxflow(costs[0], costs[1], edges, weights, weights)
    return source_side.long(), flow + float(base.sum())


@single_threaded
def graph_cut(image: torch.Tensor, foreground: torch.Tensor,
              background: torch.Tensor, config: GraphCutConfig | None = None
              ) -> torch.Tensor:
    """bool ``[H, W]``: the foreground of least energy for ``image``
    (``float [C, H, W]`` in [0, 1]) given scribbles ``foreground`` and
    ``background`` (bool ``[H, W]``, disjoint, each non-empty)."""
    config = config or GraphCutConfig()
    image = _check_image(image)
    C, H, W = image.shape
    if (foreground & background).any():
        raise ValueError("a pixel cannot be scribbled as foreground and background")
    edges, length = grid_edges(H, W, config.connectivity)
    weights = config.lam * contrast_weights(image, edges, length)
    unary = torch.stack([colour_histogram_costs(image, background, config.bins),
                         colour_histogram_costs(image, foreground, config.bins)])
    # Hard constraints: K exceeds every pixel's total pairwise weight, so
    # cutting a scribbled pixel's terminal arc never pays.
    degree = torch.zeros(H * W, dtype=torch.float64)
    degree.index_add_(0, edges[:, 0], weights).index_add_(0, edges[:, 1], weights)
    K = 1 + float(degree.max()) + float(unary.max())
    unary = unary.flatten(1)
    unary[1, background.flatten()], unary[0, background.flatten()] = K, 0
    unary[0, foreground.flatten()], unary[1, foreground.flatten()] = K, 0
    labels, _ = minimise_binary_energy(unary, edges, weights)
    return labels.view(H, W).bool()
