"""RoIAlign: a fixed-size feature for every region, by bilinear sampling
(chapter 08).

He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017,
https://arxiv.org/abs/1703.06870 (section 3, "RoIAlign").

RoIPool (:mod:`.roi_pool`) rounds a region's corners and bin edges to whole
pixels; the misalignment costs masks their accuracy. RoIAlign rounds nothing:
each of the ``PH x PW`` bins of the region is sampled at a regular grid of
``gh x gw`` points, each point's value is bilinearly interpolated from its four
nearest pixels, and the bin's output is the average of its points.

Semantics are those of torchvision's ``roi_align`` CPU kernel, detail for
detail:

- the region is ``(x1, y1, x2, y2) * spatial_scale``, minus 0.5 when
  ``aligned=True`` (pixel ``i`` has its centre at ``i + 0.5`` in box
  coordinates and at ``i`` in sampling coordinates); with ``aligned=False``
  (the legacy default) nothing is subtracted, and regions narrower or lower
  than one pixel are widened to 1;
- ``sampling_ratio > 0`` samples ``sampling_ratio x sampling_ratio`` points per
  bin; ``<= 0`` is adaptive: ``ceil(roi_height / PH) x ceil(roi_width / PW)``;
- sample ``(iy, ix)`` of bin ``(ph, pw)`` is at
  ``y = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh`` (the same floating-point
  operations in the same order, so the same floors);
- a sample with ``y`` or ``x`` outside ``[-1, H]`` (``[-1, W]``) contributes 0
  but still counts in the average; inside, coordinates below 0 are clamped to 0
  and those at or beyond the last pixel to it;
- the average divides by ``max(gh * gw, 1)``; a region with no samples
  (``aligned=True`` and zero size) gives 0.

How it is computed: every bin is a weighted sum of at most ``4 gh gw`` pixels,
with weights and pixel indices that depend on the region only, not on the
channel. So the pixels of the feature map become rows of a table ``[N*H*W, C]``
(channels last) and one ``torch.nn.functional.embedding_bag`` call with
``per_sample_weights`` gathers and sums them for all RoIs and all channels at
once; autograd carries gradients back to the feature map. A map in the default
(NCHW) memory format is first copied into that layout, one pass over the map
that costs as much as the pooling itself for 512 RoIs; a ``channels_last`` map
is used as it is. With the adaptive ratio, RoIs are sorted by their
``(gh, gw)``; the indices and weights are built per grid size (a loop over the
distinct sizes, not over RoIs) and one ``embedding_bag`` with per-bag offsets
pools them all.

Deviations from torchvision: summation order (a bin's samples are summed in one
sequence, not sample by sample, and the average's division is folded into the
weights), so results agree to rounding (about 1e-7 relative in float32), not
bit for bit; a sample outside the map multiplies its weight 0 with a pixel of
row or column 0 rather than with pixel (0, 0), which differs only when the map
holds inf or nan there; RoIs whose dtype differs from the input's are cast to
it (torchvision raises an error); the output is in channels_last memory format
(torchvision's is contiguous).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.detection.rois import as_rois

# Upper bound on the number of (pixel, weight) entries per embedding_bag call:
# keeps the index and weight tensors under ~100 MB for huge adaptive grids.
MAX_ENTRIES = 1 << 22


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or (height, width), got {size}")
    return size


def pixel_table(input: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W] -> [N*H*W, C]``: row ``(n*H + y)*W + x`` holds pixel
    ``(y, x)`` of map ``n``. A view (no copy) when ``input`` is already in
    ``torch.channels_last`` memory format, a copy otherwise."""
    N, C, H, W = input.shape
    return input.permute(0, 2, 3, 1).reshape(N * H * W, C)


def _axis_interpolation(coord: torch.Tensor, size: int):
    """Bilinear interpolation along one axis, as the kernel does it.

    ``coord``: sample coordinates (any shape, float). Returns ``(low, high,
    w_low, w_high, valid)``: the two neighbouring pixel indices (int64), their
    weights ``1 - l`` and ``l`` and whether the coordinate is inside
    ``[-1, size]`` (outside, the sample contributes nothing)."""
    valid = (coord >= -1.0) & (coord <= size)  # False for nan as well
    coord = torch.where(valid, coord, 0).clamp(min=0)
    low = coord.to(torch.int64)  # truncation = floor, coord >= 0
    at_end = low >= size - 1
    low = torch.where(at_end, size - 1, low)
    high = torch.where(at_end, size - 1, low + 1)
    coord = torch.where(at_end, low.to(coord.dtype), coord)
    l = coord - low  # noqa: E741 (the kernel's name for the fractional part)
    return low, high, 1.0 - l, l, valid


def _bin_samples(H, W, batch, start_h, start_w, bin_h, bin_w, PH, PW, gh, gw):
    """Pixels and weights of every bin of ``k`` RoIs that share the grid ``gh x gw``.

    ``batch``: int64 ``[k]``; ``start_*``, ``bin_*``: ``[k]`` in the input's dtype
    (already scaled and offset). Returns ``index`` (int64, rows of the pixel
    table) and ``weight``, both ``[k, PH, PW, gh * gw * 4]``: bin ``(ph, pw)`` is
    ``sum(weight * table[index])`` over the last dimension."""
    k = batch.shape[0]
    like = dict(dtype=start_h.dtype, device=start_h.device)
    ph = torch.arange(PH, **like)[None, :, None]
    pw = torch.arange(PW, **like)[None, :, None]
    iy = torch.arange(gh, **like)[None, None, :] + 0.5
    ix = torch.arange(gw, **like)[None, None, :] + 0.5
    # The kernel's expression, operation for operation.
    y = (start_h[:, None, None] + ph * bin_h[:, None, None]) + (
        iy * bin_h[:, None, None]) / gh  # (k, PH, gh)
    x = (start_w[:, None, None] + pw * bin_w[:, None, None]) + (
        ix * bin_w[:, None, None]) / gw  # (k, PW, gw)
    y_low, y_high, hy, ly, valid_y = _axis_interpolation(y, H)
    x_low, x_high, hx, lx, valid_x = _axis_interpolation(x, W)
    # A sample outside the map (in y or in x) contributes 0: its weights are
    # zeroed along that axis. The average's 1 / (gh gw) goes into the y weights
    # too (exact for the usual 2 x 2 samples, a power of two).
    hy = torch.where(valid_y, hy, 0) / (gh * gw)
    ly = torch.where(valid_y, ly, 0) / (gh * gw)
    hx = torch.where(valid_x, hx, 0)
    lx = torch.where(valid_x, lx, 0)

    # The four neighbours in the kernel's order: (low, low), (low, high),
    # (high, low), (high, high); their weights hy*hx, hy*lx, ly*hx, ly*lx.
    rows = torch.stack((y_low, y_low, y_high, y_high), dim=-1)  # (k, PH, gh, 4)
    cols = torch.stack((x_low, x_high, x_low, x_high), dim=-1)  # (k, PW, gw, 4)
    wy = torch.stack((hy, hy, ly, ly), dim=-1)  # (k, PH, gh, 4)
    wx = torch.stack((hx, lx, hx, lx), dim=-1)  # (k, PW, gw, 4)
    rows = (batch[:, None, None, None] * H + rows) * W  # first pixel of each row
    # The only two operations on every (bin, sample, neighbour):
    index = rows[:, :, None, :, None, :] + cols[:, None, :, None, :, :]
    weight = wy[:, :, None, :, None, :] * wx[:, None, :, None, :, :]
    return (index.view(k, PH, PW, -1),  # (k, PH, PW, gh*gw*4)
            weight.view(k, PH, PW, -1))


def roi_align(input: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor],
              output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """RoIAlign with torchvision's signature and semantics.

    Args:
        input: feature maps ``float [N, C, H, W]`` (any memory format; channels
            last avoids a copy, see :func:`pixel_table`).
        boxes: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``, or a list
            of ``Tensor[L_i, 4]`` (one per image), in image coordinates.
        output_size: ``PH`` or ``(PH, PW)``, bins per RoI.
        spatial_scale: feature-map pixels per image pixel (1/16 for stride 16).
        sampling_ratio: samples per bin along each axis; ``<= 0`` adaptive
            (``ceil(roi_size / output_size)``).
        aligned: subtract half a pixel so that sampling is centred (Detectron2);
            ``False`` is the original Mask R-CNN code's legacy behaviour.

    Returns:
        ``[K, C, PH, PW]`` in ``input``'s dtype, differentiable with respect to
        ``input`` (not to ``boxes``), in ``torch.channels_last`` memory format
        (the layout it is computed in; ``.contiguous()`` if a view must follow).
    """
    rois = as_rois(boxes, input)
    PH, PW = _pair(output_size)
    N, C, H, W = input.shape
    K = rois.shape[0]
    dtype = input.dtype
    if K == 0 or C == 0:
        return input.new_zeros((K, PH, PW, C)).permute(0, 3, 1, 2)

    scale = torch.tensor(spatial_scale, dtype=dtype)  # the kernel's T(spatial_scale)
    offset = 0.5 if aligned else 0.0
    batch = rois[:, 0].to(torch.int64)  # truncation, as the kernel's int cast
    start_w = rois[:, 1] * scale - offset
    start_h = rois[:, 2] * scale - offset
    roi_w = (rois[:, 3] * scale - offset) - start_w
    roi_h = (rois[:, 4] * scale - offset) - start_h
    if not aligned:  # legacy: malformed RoIs are forced to 1 x 1
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = roi_h / PH
    bin_w = roi_w / PW
    if sampling_ratio > 0:
        grid = torch.full((K, 2), sampling_ratio, dtype=torch.int64, device=rois.device)
    else:
        # ceil(roi / P); a negative or nan size gives no samples (output 0).
        grid = torch.stack((torch.ceil(roi_h / PH), torch.ceil(roi_w / PW)), dim=1)
        grid = grid.nan_to_num(0).clamp(min=0).to(torch.int64)  # (K, 2): gh, gw

    # RoIs sorted by grid size, so that each grid's RoIs are one slice; every
    # slice (or part of one, for huge grids) is a "piece" of one grid size.
    order = None
    if sampling_ratio <= 0:
        order = (grid[:, 0] * (int(grid[:, 1].max()) + 1) + grid[:, 1]).argsort()
        batch, grid = batch.index_select(0, order), grid.index_select(0, order)
        start_h, start_w, bin_h, bin_w = torch.stack(
            (start_h, start_w, bin_h, bin_w), dim=1).index_select(0, order).unbind(1)
    sizes, counts = torch.unique_consecutive(grid, dim=0, return_counts=True)

    table = pixel_table(input)
    pieces, outputs, entries = [], [], 0  # one embedding_bag per batch of pieces
    start = 0
    for (gh, gw), count in zip(sizes.tolist(), counts.tolist()):
        per_roi = PH * PW * gh * gw * 4
        step = max(1, MAX_ENTRIES // max(per_roi, 1))  # RoIs per piece
        for lo in range(start, start + count, step):
            hi = min(lo + step, start + count)
            if entries + (hi - lo) * per_roi > MAX_ENTRIES and pieces:
                outputs.append(_pool_pieces(table, pieces))
                pieces, entries = [], 0
            if gh == 0 or gw == 0:  # no samples: empty bags, which sum to 0
                index = batch.new_zeros((hi - lo, PH, PW, 0))
                weight = input.new_zeros((hi - lo, PH, PW, 0))
            else:
                index, weight = _bin_samples(H, W, batch[lo:hi], start_h[lo:hi],
                                             start_w[lo:hi], bin_h[lo:hi],
                                             bin_w[lo:hi], PH, PW, gh, gw)
            pieces.append((index, weight))
            entries += (hi - lo) * per_roi
        start += count
    outputs.append(_pool_pieces(table, pieces))
    out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # (K*PH*PW, C)
    out = out.view(K, PH, PW, C)
    if order is not None:  # back to the RoIs' order
        out = out.index_select(0, torch.argsort(order))
    # A view: (K, C, PH, PW) in channels_last memory format, no copy.
    return out.permute(0, 3, 1, 2)


def _pool_pieces(table, pieces):
    """One ``embedding_bag`` over the bins of several pieces: ``[bins, C]``."""
    if len(pieces) == 1:  # bags of one size: the 2-D form, no offsets
        index, weight = pieces[0]
        if index.shape[3] == 0:  # only RoIs without samples
            return table.new_zeros((index.shape[0] * index.shape[1] * index.shape[2],
                                    table.shape[1]))
        return F.embedding_bag(index.flatten(0, 2), table, mode="sum",
                               per_sample_weights=weight.flatten(0, 2))
    index = torch.cat([i.flatten() for i, _ in pieces])
    weight = torch.cat([w.flatten() for _, w in pieces])
    # Bag b of a piece starts at the piece's first entry + b * (entries per bag).
    starts, first = [], 0
    for i, _ in pieces:
        bags, per_bag = i.shape[0] * i.shape[1] * i.shape[2], i.shape[3]
        starts.append(first + torch.arange(bags, device=i.device) * per_bag)
        first += bags * per_bag
    return F.embedding_bag(index, table, torch.cat(starts), mode="sum",
                           per_sample_weights=weight)


class RoIAlign(nn.Module):
    """:func:`roi_align` as a module (no parameters)."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float,
                 sampling_ratio: int, aligned: bool = False):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor,
                rois: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
