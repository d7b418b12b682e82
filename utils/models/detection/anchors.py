"""Anchors: the reference boxes a region proposal network scores and refines
(chapter 08).

Ren, He, Girshick & Sun, "Faster R-CNN: Towards Real-Time Object Detection with
Region Proposal Networks", NeurIPS 2015, https://arxiv.org/abs/1506.01497
(section 3.1.1); with a feature pyramid, one size per level (Lin et al.,
"Feature Pyramid Networks for Object Detection", CVPR 2017, section 4.1:
sizes 32, 64, 128, 256, 512 on levels P2..P6, aspect ratios 1:2, 1:1, 2:1).

At every position of a feature map of stride ``s`` sit ``A`` anchors, one per
(aspect ratio, size), all centred on the position's top-left image pixel
``(x * s, y * s)``. An anchor of size ``S`` and aspect ratio ``r = h / w`` has
``w = S / sqrt(r)`` and ``h = S * sqrt(r)``, so its area stays ``S**2``.

Layout and rounding are torchvision's ``AnchorGenerator``'s, which a model
loading torchvision's weights needs (the RPN head predicts ``A`` scores per
position in this order):

- the zero-centred "cell anchors" ``(-w/2, -h/2, w/2, h/2)`` are rounded to
  integers (``torch.round``, halves to even), in float32;
- per position, ratios vary slowest and sizes fastest:
  ``(r0, S0), (r0, S1), ..., (r1, S0), ...``;
- positions run row by row (y slowest, x fastest), so anchor ``(y, x, a)`` is row
  ``(y * W + x) * A + a`` of the level's anchors;
- a level's stride is ``image_size // feature_size`` (the padded batch size),
  separately for height and width; levels are concatenated in order.

Deviations from the paper: centres at ``x * s`` rather than the pixel centre
``x * s + (s - 1) / 2`` of the original Caffe code; this is torchvision's choice.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.models.detection.image_list import ImageList


class AnchorGenerator(nn.Module):
    """Anchors for every image of a batch over several feature maps.

    Args:
        sizes: per feature map, a tuple of sizes in image pixels, e.g.
            ``((32,), (64,), (128,), (256,), (512,))`` for FPN.
        aspect_ratios: per feature map, a tuple of ratios ``h / w``, e.g.
            ``((0.5, 1.0, 2.0),) * 5``.

    ``forward(image_list, feature_maps)`` returns, per image, ``float [sum_l
    H_l * W_l * A_l, 4]`` anchors ``(x1, y1, x2, y2)`` in the padded batch's pixel
    coordinates (the same for every image), in the feature maps' dtype.
    """

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        super().__init__()
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"{len(sizes)} tuples of sizes but {len(aspect_ratios)} "
                             f"of aspect ratios: give one of each per feature map")
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.cell_anchors = [self.generate_anchors(s, r)
                             for s, r in zip(sizes, aspect_ratios)]

    @staticmethod
    def generate_anchors(scales, aspect_ratios, dtype=torch.float32,
                         device=None) -> torch.Tensor:
        """Zero-centred anchors ``[len(ratios) * len(scales), 4]``, rounded."""
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        aspect_ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(aspect_ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)  # ratio-major
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes: list[tuple[int, int]],
                     strides: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Per feature map, ``[H * W * A, 4]``: the cell anchors shifted to every
        position ``(x * stride_w, y * stride_h)``."""
        if not len(grid_sizes) == len(strides) == len(self.cell_anchors):
            raise ValueError(
                f"{len(grid_sizes)} feature maps but anchors for "
                f"{len(self.cell_anchors)}: give one tuple of sizes and of aspect "
                f"ratios per feature map")
        anchors = []
        for (grid_h, grid_w), (stride_h, stride_w), base in zip(
                grid_sizes, strides, self.cell_anchors):
            device = base.device
            shifts_x = torch.arange(grid_w, dtype=torch.int64, device=device) * stride_w
            shifts_y = torch.arange(grid_h, dtype=torch.int64, device=device) * stride_h
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x = shift_x.reshape(-1)
            shift_y = shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), 1)  # (H*W, 4)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, image_list: ImageList,
                feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        grid_sizes = [tuple(f.shape[-2:]) for f in feature_maps]
        image_h, image_w = image_list.tensors.shape[-2:]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [(image_h // g[0], image_w // g[1]) for g in grid_sizes]
        self.cell_anchors = [c.to(dtype=dtype, device=device)
                             for c in self.cell_anchors]
        per_level = self.grid_anchors(grid_sizes, strides)  # [(H_l W_l A_l, 4)]
        # A tensor of its own per image: a caller may modify one in place.
        return [torch.cat(per_level) for _ in image_list.image_sizes]
