"""What the watershed needs around it: connected components, the Euclidean
distance transform, and h-maxima as markers (chapter 10).

To split touching cells one floods the *distance to the background*, turned
upside down, from one marker per cell: a cell's centre is far from the
background, the neck between two pressed cells is closer, so the flood from
two centres meets at the neck. The markers are the distance's maxima that
stand out by at least ``h`` (the h-maxima, Soille, "Morphological Image
Analysis", 2003, ch. 6): plain local maxima would split a cell at every bump
of its outline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.classical._threads import single_threaded


def _check_mask(mask) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got {list(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool, got {mask.dtype}")
    return mask


@single_threaded
def connected_components(mask, connectivity: int = 4) -> torch.Tensor:
    """``int64 [H, W]``: 0 off ``mask``, and 1..N for its connected
    components, numbered in raster order of their first pixel."""
    mask = _check_mask(mask)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    H, W = mask.shape
    on = mask.flatten().tolist()
    parent = list(range(H * W))

    def root(p):
        while parent[p] != p:
            parent[p] = parent[parent[p]]  # path halving keeps the trees flat
            p = parent[p]
        return p

    # Union each pixel with the neighbours already visited in raster order.
    back = [(0, -1), (-1, 0)] + ([(-1, -1), (-1, 1)] if connectivity == 8 else [])
    for p in range(H * W):
        if not on[p]:
            continue
        y, x = divmod(p, W)
        for dy, dx in back:
            v, u = y + dy, x + dx
            if 0 <= v and 0 <= u < W and on[v * W + u]:
                a, b = root(p), root(v * W + u)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # the earlier pixel is the root
    labels, number = [0] * (H * W), {}
    for p in range(H * W):
        if on[p]:
            r = root(p)
            if r not in number:
                number[r] = len(number) + 1
            labels[p] = number[r]
    return torch.tensor(labels, dtype=torch.int64).view(H, W)


@single_threaded
def distance_transform(mask) -> torch.Tensor:
    """``float32 [H, W]``: the Euclidean distance from each pixel of ``mask``
    to the nearest pixel off it (0 off the mask; ``inf`` everywhere if the
    mask covers the whole image). Pixels beyond the image's edge do not count
    as off the mask.

    Exact, by separability (the squared distance is a minimum over columns
    of a minimum over rows): first, along each column, the squared distance to
    the nearest background pixel of that column; then, along each row, the
    minimum over columns ``x'`` of that plus ``(x - x')^2``.
    """
    mask = _check_mask(mask)
    H, W = mask.shape
    inf = torch.tensor(float("inf"))
    ys = torch.arange(H, dtype=torch.float64)
    xs = torch.arange(W, dtype=torch.float64)
    background = ~mask
    # (H, H', W): squared row distance to background pixel (y', x), inf if none.
    g = torch.empty(H, W, dtype=torch.float64)
    for start in range(0, H, 64):  # in chunks, so memory stays O(64 H W)
        rows = ys[start : start + 64]
        d = (rows[:, None, None] - ys[None, :, None]) ** 2  # (h, H, 1)
        d = torch.where(background[None], d, inf)  # (h, H, W)
        g[start : start + 64] = d.min(1).values
    out = torch.empty(H, W, dtype=torch.float64)
    for start in range(0, H, 64):
        d = g[start : start + 64, None, :] + (xs[:, None] - xs[None, :]) ** 2
        out[start : start + 64] = d.min(2).values  # (h, W)
    return out.sqrt().float()


@single_threaded
def reconstruct_by_dilation(marker: torch.Tensor, mask: torch.Tensor
                            ) -> torch.Tensor:
    """Morphological reconstruction of ``marker`` under ``mask`` (both float
    ``[H, W]``, ``marker <= mask``): dilate ``marker`` by a 3x3 square and
    clip it to ``mask``, again and again until nothing changes."""
    if marker.shape != mask.shape or marker.ndim != 2:
        raise ValueError("marker and mask must both be [H, W]")
    if (marker > mask).any():
        raise ValueError("marker must be <= mask everywhere")
    current = marker[None, None]
    ceiling = mask[None, None]
    while True:
        grown = torch.minimum(F.max_pool2d(current, 3, stride=1, padding=1),
                              ceiling)
        if torch.equal(grown, current):
            return current[0, 0]
        current = grown


def h_maxima(image: torch.Tensor, h: float) -> torch.Tensor:
    """bool ``[H, W]``: the tops of the maxima of ``image`` that rise at least
    ``h`` above every path to a higher point (their "dynamic" is >= h).

    With ``R`` the reconstruction of ``image - h`` under ``image``, a dome of
    height at least ``h`` is cut off at exactly ``h`` below its top, so its top
    is where ``image - R`` reaches ``h``.
    """
    if h <= 0:
        raise ValueError(f"h must be > 0, got {h}")
    f = image.double()
    finite = torch.isfinite(f)
    if not finite.all():
        raise ValueError("image must be finite")
    rebuilt = reconstruct_by_dilation(f - h, f)
    return (f - rebuilt) >= h - 1e-9 * max(1.0, float(f.abs().max()))
