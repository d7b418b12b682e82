"""Edges: Sobel gradients and non-maximum suppression (chapter 10).

The first steps of Canny's detector (Canny, "A computational approach to edge
detection", IEEE TPAMI 1986), which contour-based segmentation starts from:

1. **Sobel gradients.** Two 3x3 kernels, a derivative ``[-1, 0, 1]`` along one
   axis times a smoothing ``[1, 2, 1]`` along the other, estimate ``dI/dx``
   and ``dI/dy``; their magnitude is large on edges.
2. **Non-maximum suppression.** An edge's magnitude is a ridge a few pixels
   wide; keep only the pixels whose magnitude is at least that of both
   neighbours along the gradient direction (quantised to 0, 45, 90 or 135
   degrees), which thins every ridge to one pixel.
3. **Hysteresis.** Keep the strong pixels (above ``high``) and the weak ones
   (above ``low``) connected to a strong one.

Deviations from the paper: no Gaussian pre-smoothing inside (smooth first if
the image is noisy); the border is replicated, so the image's frame is no edge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from utils.classical._threads import single_threaded

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
SOBEL_Y = SOBEL_X.T.contiguous()


def _as_grey(image: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` float: the image itself, or the mean over channels of a
    ``[C, H, W]`` image."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating-point tensor [H, W] or "
                        f"[C, H, W], got {getattr(image, 'dtype', type(image))}")
    if image.ndim == 3:
        return image.mean(0)
    if image.ndim != 2:
        raise ValueError(f"image must be [H, W] or [C, H, W], got {list(image.shape)}")
    return image


def sobel(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gx, gy)``, each ``[H, W]``: the Sobel estimates of ``dI/dx`` (along
    columns, x to the right) and ``dI/dy`` (along rows, y down), for a grey
    ``[H, W]`` or colour ``[C, H, W]`` image (channels averaged first).

    The kernels are divided by 8, so a ramp rising by 1 per pixel has
    gradient 1.
    """
    grey = _as_grey(image)
    padded = F.pad(grey[None, None], (1, 1, 1, 1), mode="replicate")
    kernels = torch.stack([SOBEL_X, SOBEL_Y])[:, None].to(grey)  # (2, 1, 3, 3)
    g = F.conv2d(padded, kernels)[0]  # (2, H, W); conv2d correlates: no flip
    return g[0], g[1]


def gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``[H, W]``: the length of the Sobel gradient of a grey ``[H, W]``
    image; for a colour ``[C, H, W]`` image, the root of the summed squared
    gradients of the channels, so that an edge between two colours of equal
    brightness still counts."""
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        squares = [torch.stack(sobel(channel)).pow(2).sum(0) for channel in image]
        return torch.stack(squares).sum(0).sqrt()
    gx, gy = sobel(image)
    return torch.hypot(gx, gy)


# Neighbour offsets (dy, dx) along the gradient for the four quantised
# directions 0, 45, 90 and 135 degrees (angle of (gx, gy), y pointing down).
_DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1))


def non_maximum_suppression(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """The gradient magnitude ``[H, W]`` where it is a maximum along the
    gradient direction, 0 elsewhere.

    The direction is rounded to the nearest multiple of 45 degrees; a pixel
    survives when its magnitude is >= both neighbours on that line (outside
    the image counts as 0) and > 0. Plateaus two pixels wide survive whole,
    as in most implementations.
    """
    if gx.shape != gy.shape or gx.ndim != 2:
        raise ValueError(f"gx and gy must both be [H, W], got {list(gx.shape)} "
                         f"and {list(gy.shape)}")
    magnitude = torch.hypot(gx, gy)
    angle = torch.atan2(gy, gx) % math.pi  # the direction of the line, [0, pi)
    sector = torch.round(angle / (math.pi / 4)).long() % 4
    padded = F.pad(magnitude, (1, 1, 1, 1))
    H, W = magnitude.shape
    keep = magnitude > 0
    for k, (dy, dx) in enumerate(_DIRECTIONS):
        ahead = padded[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
        behind = padded[1 - dy : 1 - dy + H, 1 - dx : 1 - dx + W]
        here = sector == k
        keep &= ~here | ((magnitude >= ahead) & (magnitude >= behind))
    return torch.where(keep, magnitude, torch.zeros_like(magnitude))


@single_threaded
def hysteresis(magnitude: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """bool ``[H, W]``: pixels above ``high``, and pixels above ``low`` joined
    to one of those through 8-connected pixels above ``low``."""
    if not low <= high:
        raise ValueError(f"need low <= high, got low={low}, high={high}")
    weak = (magnitude > low)[None, None].float()
    edges = (magnitude > high)[None, None].float()
    while True:  # grow the strong edges inside the weak ones until nothing changes
        grown = F.max_pool2d(edges, 3, stride=1, padding=1) * weak
        if torch.equal(grown, edges):
            return edges[0, 0].bool()
        edges = grown
