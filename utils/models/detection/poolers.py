"""Multi-scale RoIAlign: each RoI pooled from the FPN level that suits its size
(chapter 08).

Lin, Dollar, Girshick, He, Hariharan & Belongie, "Feature Pyramid Networks for
Object Detection", CVPR 2017, https://arxiv.org/abs/1612.03144 (section 4.2,
equation 1).

A feature pyramid holds maps of strides 4, 8, 16, 32 (levels k = 2..5). A small
RoI should be pooled from a fine level, a large one from a coarse level, so
that every RoI covers about the same number of feature-map pixels. The FPN paper
assigns a ``w x h`` RoI (in image pixels) to level

    k = floor(k0 + log2(sqrt(w h) / 224)),   k0 = 4,

so an ImageNet-sized 224 x 224 RoI goes to level 4 (stride 16, as in Faster
R-CNN's single-level C4 design), one half as wide to level 3, and so on,
clamped to the levels available.

Semantics are those of torchvision's ``MultiScaleRoIAlign`` and ``LevelMapper``:
``eps = 1e-6`` added inside the floor (a RoI of exactly 112 x 112 goes to level
3, not to 2 through rounding), levels clamped to ``[k_min, k_max]``; each
level's scale inferred from the feature-map size against the largest image
size of the batch as ``2 ** round(log2(feature / image))`` (height only), and
the levels from the first and last map; scales are inferred at the first call
and then kept; feature maps are taken in the dict's order (those named in
``featmap_names``); ``roi_align`` with ``aligned=False``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from utils.models.detection.boxes import box_area
from utils.models.detection.roi_align import roi_align
from utils.models.detection.rois import convert_boxes_to_roi_format


class LevelMapper:
    """FPN's equation 1: the pyramid level of each RoI.

    Args:
        k_min, k_max: the finest and coarsest levels available (e.g. 2 and 5).
        canonical_scale: the paper's 224.
        canonical_level: the paper's k0 = 4.
        eps: added before the floor, against rounding at exact powers of two.

    Called with a list of boxes ``[Tensor[L_i, 4]]`` (image coordinates), returns
    ``int64 [sum L_i]``: the level minus ``k_min``, i.e. an index into the list
    of feature maps.
    """

    def __init__(self, k_min: int, k_max: int, canonical_scale: int = 224,
                 canonical_level: int = 4, eps: float = 1e-6):
        self.k_min = k_min
        self.k_max = k_max
        self.s0 = canonical_scale
        self.lvl0 = canonical_level
        self.eps = eps

    def __call__(self, boxlists: list[torch.Tensor]) -> torch.Tensor:
        s = torch.sqrt(torch.cat([box_area(boxes) for boxes in boxlists]))  # (K,)
        levels = torch.floor(self.lvl0 + torch.log2(s / self.s0)
                             + torch.tensor(self.eps, dtype=s.dtype))
        levels = torch.clamp(levels, min=self.k_min, max=self.k_max)
        return levels.to(torch.int64) - self.k_min


def infer_scale(feature: torch.Tensor, original_size: tuple[int, int]) -> float:
    """The feature map's scale relative to the image, assumed ``2 ** -k``:
    ``2 ** round(log2(h_feature / h_image))`` (the height decides; the width's
    estimate is ignored, as in torchvision)."""
    approx = float(feature.shape[-2]) / float(original_size[0])
    # log2 in float32 as torchvision does (it matters only at x.5 exponents).
    return 2 ** float(torch.tensor(approx).log2().round())


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over several feature maps, each RoI from the level of its size.

    Args:
        featmap_names: the keys of the feature maps to pool from, finest first
            in the dict passed to ``forward`` (e.g. ``["0", "1", "2", "3"]``).
        output_size: ``P`` or ``(PH, PW)``.
        sampling_ratio: as in :func:`roi_align` (torchvision's Mask R-CNN uses 2).
        canonical_scale, canonical_level: FPN's 224 and k0 = 4.

    ``forward(x, boxes, image_shapes)``:
        x: ``dict[str, Tensor[N, C, H_l, W_l]]``, feature maps of one ``C``;
        boxes: ``list[Tensor[L_i, 4]]``, per image, in image coordinates;
        image_shapes: ``list[(height, width)]``, the images' sizes before the
            backbone.
    returns ``[sum L_i, C, PH, PW]`` in the order of the boxes.
    """

    def __init__(self, featmap_names: list[str], output_size: int | tuple[int, int],
                 sampling_ratio: int, *, canonical_scale: int = 224,
                 canonical_level: int = 4):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.featmap_names = featmap_names
        self.sampling_ratio = sampling_ratio
        self.output_size = tuple(output_size)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.scales: list[float] | None = None
        self.map_levels: LevelMapper | None = None

    def setup_scales(self, features: list[torch.Tensor],
                     image_shapes: list[tuple[int, int]]) -> None:
        """Infer each level's scale and the level mapper (once, at the first call)."""
        if not image_shapes:
            raise ValueError("image_shapes is empty: give each image's (height, width)")
        original_size = (max(s[0] for s in image_shapes),
                         max(s[1] for s in image_shapes))
        self.scales = [infer_scale(f, original_size) for f in features]
        # Each level halves the resolution: level k has scale 2 ** -k.
        k_min = int(-math.log2(self.scales[0]))
        k_max = int(-math.log2(self.scales[-1]))
        self.map_levels = LevelMapper(k_min, k_max, self.canonical_scale,
                                      self.canonical_level)

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        features = [v for k, v in x.items() if k in self.featmap_names]
        if not features:
            raise ValueError(f"none of {self.featmap_names} in the feature maps "
                             f"{list(x)}")
        if self.scales is None or self.map_levels is None:
            self.setup_scales(features, image_shapes)
        rois = convert_boxes_to_roi_format(boxes)  # (K, 5)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size,
                             spatial_scale=self.scales[0],
                             sampling_ratio=self.sampling_ratio)

        levels = self.map_levels(boxes)  # (K,) index into features
        C = features[0].shape[1]
        result = features[0].new_zeros((rois.shape[0], C, *self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            in_level = torch.where(levels == level)[0]
            pooled = roi_align(feature, rois.index_select(0, in_level),
                               self.output_size, spatial_scale=scale,
                               sampling_ratio=self.sampling_ratio)
            result.index_copy_(0, in_level, pooled.to(result.dtype))
        return result  # (K, C, PH, PW)

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio}")
