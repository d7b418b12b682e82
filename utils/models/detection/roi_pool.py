"""RoIPool: a fixed-size feature for every region, by max pooling over
quantised bins (chapter 08).

Girshick, "Fast R-CNN", ICCV 2015, https://arxiv.org/abs/1504.08083
(section 2.1, "The RoI pooling layer").

The region's corners are rounded to whole feature-map pixels, the rounded
region is cut into ``PH x PW`` bins whose edges are rounded again (start down,
end up), and each bin outputs the maximum of its pixels. The two roundings
misalign the output with the region by up to a pixel of the feature map (16
image pixels at stride 16): the problem RoIAlign (:mod:`.roi_align`) fixes.

Semantics are those of torchvision's ``roi_pool`` CPU kernel:

- corners: ``round(x * spatial_scale)`` with C's ``round`` (halves away from
  zero: 2.5 -> 3, -2.5 -> -3; ``torch.round`` would give 2);
- region size ``max(x2 - x1 + 1, 1)`` pixels (the end pixel is included, and a
  malformed region becomes 1 x 1); bin ``p`` spans
  ``[floor(p * size / P), ceil((p + 1) * size / P))`` from the region's start,
  with ``size / P`` computed in the input's dtype, then clipped to the map;
- an empty bin (wholly outside the map) outputs 0; the gradient of a bin goes to
  its maximum, the first one in row-major order when several pixels tie.

How it is computed: for RoIs sorted by their largest bin, a chunk at a time,
every bin's pixels are gathered into a padded ``bh x bw`` window (padding is
``-inf``), ``argmax`` finds the first maximum and ``gather`` takes it (so the
gradient goes to that one pixel); no loop over RoIs or bins.

Deviations from torchvision: a nan pixel wins the maximum here (argmax takes
nan for the largest value; the kernel's ``>`` skips it), and a bin whose pixels
are all ``-inf`` gives ``-inf`` with the gradient to its first pixel (the kernel:
``-FLT_MAX``, its starting value, and no gradient).
"""

from __future__ import annotations

import torch
from torch import nn

from utils.models.detection.roi_align import _pair, pixel_table
from utils.models.detection.rois import as_rois

# Largest number of gathered values (RoIs x bins x window x channels) per chunk.
MAX_GATHERED = 1 << 24


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's ``round``: to the nearest integer, halves away from zero.

    ``x - trunc(x)`` is exact in floating point, so comparing it with 0.5 decides
    the rounding without the error of ``floor(x + 0.5)`` (which rounds
    0.49999997 up in float32)."""
    whole = torch.trunc(x)
    return whole + torch.where((x - whole).abs() >= 0.5, torch.sign(x), 0)


def _bin_edges(start: torch.Tensor, size: torch.Tensor, P: int, limit: int, dtype):
    """Bin ``p`` of each RoI spans pixels ``[lo, hi)`` (int64 ``[K, P]``),
    clipped to ``[0, limit]``."""
    bin_size = size.to(dtype) / P  # (K,), in the input's dtype as the kernel
    p = torch.arange(P, dtype=dtype, device=size.device)
    lo = torch.floor(p * bin_size[:, None]).to(torch.int64)
    hi = torch.ceil((p + 1) * bin_size[:, None]).to(torch.int64)
    lo = (lo + start[:, None]).clamp(0, limit)
    hi = (hi + start[:, None]).clamp(0, limit)
    return lo, hi  # (K, P) each


def _pool_chunk(table, H, W, batch, h_lo, h_hi, w_lo, w_hi):
    """Max over each bin for a chunk of ``k`` RoIs: ``[k, PH, PW, C]``."""
    k, PH = h_lo.shape
    PW = w_lo.shape[1]
    bh = max(int((h_hi - h_lo).max()), 1)
    bw = max(int((w_hi - w_lo).max()), 1)
    rows = h_lo[:, :, None] + torch.arange(bh, device=h_lo.device)  # (k, PH, bh)
    cols = w_lo[:, :, None] + torch.arange(bw, device=w_lo.device)  # (k, PW, bw)
    inside = ((rows < h_hi[:, :, None])[:, :, None, :, None]
              & (cols < w_hi[:, :, None])[:, None, :, None, :])  # (k, PH, PW, bh, bw)
    index = (batch[:, None, None, None, None] * H
             + rows.clamp(max=H - 1)[:, :, None, :, None]) * W \
        + cols.clamp(max=W - 1)[:, None, :, None, :]
    values = table.index_select(0, index.flatten()).view(k, PH, PW, bh * bw, -1)
    values = values.masked_fill(~inside.view(k, PH, PW, bh * bw, 1), -torch.inf)
    # argmax returns the first maximum in the window's row-major order: the
    # pixel the kernel's strict ">" scan keeps, and the one gather passes the
    # gradient to. (torch.max(dim) would do the same but opens a parallel region
    # even for tiny tensors, costly on a busy machine.)
    first = values.argmax(dim=3, keepdim=True)  # (k, PH, PW, 1, C)
    best = values.gather(3, first).squeeze(3)  # (k, PH, PW, C)
    empty = (h_hi <= h_lo)[:, :, None] | (w_hi <= w_lo)[:, None, :]  # (k, PH, PW)
    return best.masked_fill(empty[..., None], 0)


def roi_pool(input: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor],
             output_size: int | tuple[int, int],
             spatial_scale: float = 1.0) -> torch.Tensor:
    """RoIPool with torchvision's signature and semantics.

    Args:
        input: feature maps ``float [N, C, H, W]``.
        boxes: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` or a list of
            ``Tensor[L_i, 4]``, in image coordinates.
        output_size: ``PH`` or ``(PH, PW)``.
        spatial_scale: feature-map pixels per image pixel.

    Returns:
        ``[K, C, PH, PW]`` in ``input``'s dtype, differentiable with respect to
        ``input``.
    """
    rois = as_rois(boxes, input)
    PH, PW = _pair(output_size)
    N, C, H, W = input.shape
    K = rois.shape[0]
    dtype = input.dtype
    out = input.new_zeros((K, PH, PW, C))
    if K == 0 or C == 0:
        return out.permute(0, 3, 1, 2).contiguous()

    scale = torch.tensor(spatial_scale, dtype=dtype)
    batch = rois[:, 0].to(torch.int64)
    x1, y1, x2, y2 = round_half_away(rois[:, 1:] * scale).to(torch.int64).unbind(1)
    roi_w = (x2 - x1 + 1).clamp(min=1)
    roi_h = (y2 - y1 + 1).clamp(min=1)
    h_lo, h_hi = _bin_edges(y1, roi_h, PH, H, dtype)
    w_lo, w_hi = _bin_edges(x1, roi_w, PW, W, dtype)

    table = pixel_table(input)
    # Sorting by window size keeps the padding of each chunk small.
    window = (h_hi - h_lo).amax(1).clamp(min=1) * (w_hi - w_lo).amax(1).clamp(min=1)
    order = window.argsort()
    sorted_window = window.index_select(0, order).tolist()
    budget = max(MAX_GATHERED // (PH * PW * C), 1)  # window pixels per chunk
    start = 0
    while start < K:
        # Grow the chunk while (RoIs in it) x (its largest window) fits the budget.
        stop = start + 1
        while stop < K and (stop + 1 - start) * sorted_window[stop] <= budget:
            stop += 1
        part = order[start:stop]
        pooled = _pool_chunk(table, H, W, *(t.index_select(0, part) for t in
                                            (batch, h_lo, h_hi, w_lo, w_hi)))
        out.index_copy_(0, part, pooled)
        start = stop
    return out.permute(0, 3, 1, 2).contiguous()  # (K, C, PH, PW)


class RoIPool(nn.Module):
    """:func:`roi_pool` as a module (no parameters)."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: torch.Tensor,
                rois: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
