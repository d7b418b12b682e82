"""Detection and instance segmentation (chapters 08 and 09).

The operations Mask R-CNN stands on, each in a module of its own and each with
torchvision's signature and semantics (boxes are ``float [N, 4]`` as
``(x1, y1, x2, y2)``, indices ``int64``), then the networks built on them.

=================  ==========================================================
module             holds
=================  ==========================================================
``boxes``          box_area, box_iou, clip_boxes_to_image, remove_small_boxes,
                   masks_to_boxes
``nms``            nms, batched_nms
``rois``           the RoI box formats (``Tensor[K, 5]`` or a list of
                   ``Tensor[L, 4]``)
``roi_pool``       roi_pool, RoIPool (Fast R-CNN)
``roi_align``      roi_align, RoIAlign (Mask R-CNN)
``poolers``        MultiScaleRoIAlign, LevelMapper (FPN's level mapping)
``image_list``     ImageList (a padded batch and its image sizes)
``anchors``        AnchorGenerator
``box_coder``      BoxCoder (dx, dy, dw, dh)
``matcher``        Matcher (IoU thresholds, low-quality matches)
``sampler``        BalancedPositiveNegativeSampler
``masks``          paste_masks_in_image
=================  ==========================================================
"""

from utils.models.detection.anchors import AnchorGenerator
from utils.models.detection.box_coder import BoxCoder, encode_boxes
from utils.models.detection.boxes import (
    box_area,
    box_iou,
    clip_boxes_to_image,
    masks_to_boxes,
    remove_small_boxes,
)
from utils.models.detection.image_list import ImageList
from utils.models.detection.masks import (
    expand_boxes,
    expand_masks,
    paste_mask_in_image,
    paste_masks_in_image,
)
from utils.models.detection.matcher import Matcher
from utils.models.detection.nms import batched_nms, nms
from utils.models.detection.poolers import LevelMapper, MultiScaleRoIAlign, infer_scale
from utils.models.detection.roi_align import RoIAlign, roi_align
from utils.models.detection.roi_pool import RoIPool, roi_pool
from utils.models.detection.rois import convert_boxes_to_roi_format
from utils.models.detection.sampler import BalancedPositiveNegativeSampler

__all__ = [
    "AnchorGenerator",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "ImageList",
    "LevelMapper",
    "Matcher",
    "MultiScaleRoIAlign",
    "RoIAlign",
    "RoIPool",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes_to_image",
    "convert_boxes_to_roi_format",
    "encode_boxes",
    "expand_boxes",
    "expand_masks",
    "infer_scale",
    "masks_to_boxes",
    "nms",
    "paste_mask_in_image",
    "paste_masks_in_image",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
]
