"""Segmentation metrics (derived in chapter 01)."""

from utils.metrics.confusion import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
from utils.metrics.boundary import boundary_iou, boundary_target  # noqa: F401
