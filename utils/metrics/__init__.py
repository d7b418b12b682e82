"""Segmentation metrics (derived in chapter 01): confusion-matrix metrics for
semantic segmentation, panoptic quality, and COCO mask AP."""

from utils.metrics.boundary import boundary_iou, boundary_target
from utils.metrics.confusion import (
    ConfusionMatrix,
    confusion_matrix,
    metrics_from_matrix,
    per_image_confusion,
)
from utils.metrics.mask_ap import DetectionAP, box_ap, mask_ap, mask_iou
from utils.metrics.panoptic import PanopticQuality, match_segments

__all__ = [
    "ConfusionMatrix",
    "DetectionAP",
    "PanopticQuality",
    "boundary_iou",
    "box_ap",
    "boundary_target",
    "confusion_matrix",
    "mask_ap",
    "mask_iou",
    "match_segments",
    "metrics_from_matrix",
    "per_image_confusion",
]
