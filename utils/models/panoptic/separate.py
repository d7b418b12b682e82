"""Two networks, fused: a semantic model for stuff and an instance model for
things, combined by :func:`.fusion.panoptic_fusion` (chapter 09).

The baseline Panoptic FPN is compared with (Kirillov et al., "Panoptic
Segmentation", CVPR 2019, section 7; Panoptic FPN, section 4.3). Eval mode
only, with the panoptic task's output contract: ``model(images)`` for a list
of ``float32 [3, H_i, W_i]`` in [0, 1] -> per image ``panoptic int64 [H_i,
W_i, 2]``, ``semantic int64 [H_i, W_i]`` (the semantic model's argmax) and
the instance model's detections.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.models.panoptic.fusion import FusionConfig, panoptic_fusion


class SeparatePanoptic(nn.Module):
    """``semantic``: ``[B, 3, H, W] -> [B, K, H, W]`` scores over all
    categories; ``instance``: a Mask R-CNN (labels 1..T, label ``k`` is
    category ``thing_ids[k - 1]``)."""

    task = "panoptic"

    def __init__(self, semantic: nn.Module, instance: nn.Module, thing_ids, stuff_ids,
                 fusion: FusionConfig | None = None):
        super().__init__()
        self.semantic, self.instance = semantic, instance
        self.thing_ids, self.stuff_ids = tuple(thing_ids), tuple(stuff_ids)
        self.fusion = fusion or FusionConfig()

    def forward(self, images, targets=None):
        if self.training:
            raise RuntimeError("SeparatePanoptic only predicts: train its semantic "
                               "and instance models on their own tasks")
        detections = self.instance(images)
        things = torch.tensor(self.thing_ids, device=images[0].device)
        out = []
        for image, d in zip(images, detections):
            semantic = self.semantic(image[None]).argmax(1)[0]  # (H, W)
            panoptic = panoptic_fusion(semantic, d["masks"], d["scores"],
                                       things[d["labels"] - 1], self.stuff_ids,
                                       self.fusion)
            out.append({**d, "semantic": semantic, "panoptic": panoptic})
        return out
