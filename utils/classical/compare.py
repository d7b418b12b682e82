"""Classical methods and networks on the same images and metrics: the pieces
that chapter 10's notebook and ``benchmarks/classical_and_crf.py`` share.

- Shapes as a binary problem: *things* (circle, square, triangle, ring,
  cross) against *stuff*, ignore pixels left out (:func:`binary_target`);
- the interactive methods, each fed the same simulated clicks
  (:mod:`utils.classical.clicks`): region growing, the watershed on the
  colour gradient, and the graph cut on scribbles grown from the clicks;
- Otsu's threshold, given the better of its two polarities (it cannot know
  which side is foreground);
- the cells of chapter 04 split by the watershed (:func:`split_cells`);
- a coarse prediction that needs no training, for the CRF to refine
  (:func:`coarse_probabilities`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.classical import edges, morphology, otsu
from utils.classical._threads import single_threaded
from utils.classical.clicks import scribbles, simulated_clicks
from utils.classical.graph_cut import GraphCutConfig, graph_cut
from utils.classical.region_growing import region_grow
from utils.classical.watershed import watershed
from utils.data import IGNORE_INDEX
from utils.data.shapes import STUFF_CLASSES
from utils.metrics import ConfusionMatrix, boundary_iou

FIRST_THING = len(STUFF_CLASSES)  # Shapes' class ids: stuff first, then things
INTERACTIVE = ("region growing", "watershed", "graph cut")
REGION_THRESHOLD = 0.2  # region growing: colour distance to the region's mean
GRAPH_CUT_LAMBDA = 0.5  # graph cut: weight of the boundary term


def thing_mask(target: torch.Tensor) -> torch.Tensor:
    """bool, like ``target``: the pixels of a thing class (not ignore)."""
    return (target >= FIRST_THING) & (target != IGNORE_INDEX)


def binary_target(target: torch.Tensor) -> torch.Tensor:
    """``int64`` like ``target``: 1 for things, 0 for stuff, 255 kept."""
    return torch.where(target == IGNORE_INDEX, IGNORE_INDEX,
                       thing_mask(target).long())


def binary_scores(masks: torch.Tensor, targets: torch.Tensor, band: int = 3
                  ) -> tuple[float, float]:
    """``(foreground IoU, boundary IoU)`` of bool ``masks [B, H, W]`` against
    the things of ``targets``; boundary IoU is the mean IoU of the two
    classes within ``band`` pixels of a true thing/stuff boundary."""
    truth = binary_target(targets)
    cm = ConfusionMatrix(2)
    cm.update(masks.long(), truth)
    return float(cm.compute()["iou"][1]), boundary_iou(masks.long(), truth, 2, band)


def otsu_best_polarity(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Otsu's mask of the grey image or its complement, whichever overlaps
    the things better: an upper bound on what the threshold can do."""
    grey = image.mean(0)
    mask = grey >= otsu.otsu_threshold(grey)
    truth, valid = thing_mask(target), target != IGNORE_INDEX

    def iou(m):
        union = int(((m | truth) & valid).sum())
        return float((m & truth & valid).sum()) / max(1, union)

    return mask if iou(mask) >= iou(~mask) else ~mask


@single_threaded
def interactive(image: torch.Tensor, target: torch.Tensor, method: str
                ) -> torch.Tensor:
    """bool ``[H, W]``: the things found by ``method`` (one of
    :data:`INTERACTIVE`) from one simulated click per region of ``target``."""
    seeds, classes = simulated_clicks(target)
    thing = classes >= FIRST_THING  # which clicks are on things
    if method == "region growing":
        grown = region_grow(image, seeds, REGION_THRESHOLD)
        return thing[grown] & (grown > 0)
    if method == "watershed":
        return thing[watershed(edges.gradient_magnitude(image), seeds)]
    if method == "graph cut":
        strokes = scribbles(seeds, classes, target)
        fg, bg = (strokes > 0) & thing[strokes], (strokes > 0) & ~thing[strokes]
        if not fg.any() or not bg.any():  # one label only: nothing to cut
            return torch.full_like(fg, bool(fg.any()))
        return graph_cut(image, fg, bg, GraphCutConfig(lam=GRAPH_CUT_LAMBDA))
    raise ValueError(f"method must be one of {INTERACTIVE}, got {method!r}")


def _blur(image: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(image[None, None], 3, 1, 1, count_include_pad=False)[0, 0]


@single_threaded
def split_cells(image: torch.Tensor, by: str = "intensity", h: float | None = None
                ) -> torch.Tensor:
    """Instance map ``int64 [H, W]`` of the cells in ``image [C, H, W]``:
    Otsu's mask of the grey image, split by the watershed from h-maxima
    markers, flooding either the inverted distance to the background
    (``by="distance"``, ``h`` = 0.5 pixels by default) or the inverted,
    3x3-blurred image (``by="intensity"``, ``h`` = 0.03 by default)."""
    grey = image.mean(0)
    mask = grey >= otsu.otsu_threshold(grey)
    if by == "distance":
        relief, h = morphology.distance_transform(mask), 0.5 if h is None else h
    elif by == "intensity":
        relief, h = _blur(grey), 0.03 if h is None else h
    else:
        raise ValueError(f"by must be 'distance' or 'intensity', got {by!r}")
    markers = morphology.connected_components(morphology.h_maxima(relief, h) & mask, 8)
    return watershed(-relief, markers, mask)


def coarse_probabilities(targets: torch.Tensor, num_classes: int, stride: int = 16,
                         doubt: float = 0.2) -> torch.Tensor:
    """``float32 [B, K, H, W]``: what a network at ``stride`` would predict if
    it knew the exact class fractions of every ``stride`` x ``stride`` block
    of ``targets`` (``int64 [B, H, W]``, ignore pixels count for no class):
    the fractions upsampled bilinearly, mixed with ``doubt`` of the uniform
    distribution."""
    one_hot = F.one_hot(targets.clamp(max=num_classes - 1), num_classes)
    one_hot = one_hot.permute(0, 3, 1, 2).float() * (targets != IGNORE_INDEX)[:, None]
    fractions = F.avg_pool2d(one_hot, stride, ceil_mode=True)
    p = F.interpolate(fractions, size=targets.shape[-2:], mode="bilinear",
                      align_corners=False)
    p = (1 - doubt) * p + doubt / num_classes
    total = p.sum(1, keepdim=True)  # 0 only for a block of ignore and no doubt
    return torch.where(total > 0, p / total.clamp(min=1e-12), 1.0 / num_classes)
