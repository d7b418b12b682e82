"""Segmentation metrics (derived in chapter 01)."""

from utils.metrics.confusion import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
