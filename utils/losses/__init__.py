"""Segmentation losses (derived in chapter 01).

All take raw ``logits [B, C, ...]`` and an integer ``target [B, ...]`` whose
``ignore_index`` pixels contribute neither to the loss nor to its gradient.
"""

from utils.losses.class_weights import (
    class_pixel_counts,
    inverse_frequency_weights,
    median_frequency_weights,
)
from utils.losses.cross_entropy import cross_entropy, pixel_weighted_cross_entropy
from utils.losses.dice import dice_loss
from utils.losses.focal import focal_loss

__all__ = [
    "class_pixel_counts",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "inverse_frequency_weights",
    "median_frequency_weights",
    "pixel_weighted_cross_entropy",
]
