"""Mask R-CNN's input transform: normalise, resize, pad into one batch; and the
way back (chapter 08).

Detectron's convention, kept by torchvision's ``GeneralizedRCNNTransform``:

1. **normalise** each image ``float [3, H, W]`` in [0, 1] with ImageNet's mean
   and standard deviation (the backbone's pretraining statistics);
2. **resize** it, keeping its aspect ratio, so that its shorter side is
   ``min_size`` (800) unless its longer side would then pass ``max_size``
   (1333), in which case the longer side is ``max_size``: the scale is
   ``min(min_size / shorter, max_size / longer)``, bilinear, without corner
   alignment; boxes are scaled by the same factors and masks resized with
   nearest neighbours. In training ``min_size`` may be several sizes, one
   drawn per image (multi-scale training);
3. **pad** the images at the bottom and right with zeros to one size, a
   multiple of 32 (so that every FPN level halves exactly), and remember each
   image's size before padding (:class:`ImageList`): nothing is detected in
   the padding.

After the network, :meth:`postprocess` maps the detections back to the
original images: boxes scaled by the inverse factors, and each detection's
28x28 mask pasted into its box in an image of the original size
(:func:`paste_masks_in_image`).

Semantics are torchvision's, step for step (the float operations of
``resize_boxes``; the random draw of ``min_size`` in training, made even when
there is one size, so that a seeded run draws the same random numbers as
torchvision's).

Deviations from torchvision: none (``fixed_size`` and its ONNX paths are left
out).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.models.detection.image_list import ImageList
from utils.models.detection.masks import paste_masks_in_image


def resize_boxes(boxes: torch.Tensor, original_size: tuple[int, int],
                 new_size: tuple[int, int]) -> torch.Tensor:
    """Scale ``float [N, 4]`` boxes from an image of ``original_size`` (H, W)
    to one of ``new_size``."""
    ratio_h, ratio_w = (
        torch.tensor(s, dtype=torch.float32, device=boxes.device)
        / torch.tensor(s_orig, dtype=torch.float32, device=boxes.device)
        for s, s_orig in zip(new_size, original_size))
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


class GeneralizedRCNNTransform(nn.Module):
    """Images ``[float [3, H_i, W_i]]`` in [0, 1] (and their targets) to an
    :class:`ImageList` of normalised, resized, padded images (and targets in
    the resized images' pixels).

    Args:
        min_size: shorter side after resizing, or a tuple of sizes to draw
            from in training (the last is used in evaluation).
        max_size: the longer side's limit.
        image_mean, image_std: per-channel normalisation.
        size_divisible: the padded batch's height and width are multiples of it.
    """

    def __init__(self, min_size: int | tuple[int, ...], max_size: int,
                 image_mean: tuple[float, ...], image_std: tuple[float, ...],
                 size_divisible: int = 32):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) \
            else (min_size,)
        self.max_size = max_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.size_divisible = size_divisible

    def forward(self, images: list[torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[ImageList, list[dict[str, torch.Tensor]] | None]:
        images = list(images)
        if targets is not None:  # shallow copies: the caller's dicts stay as they are
            targets = [dict(t) for t in targets]
        for i, image in enumerate(images):
            if image.dim() != 3:
                raise ValueError(f"images[{i}] must be [C, H, W], got "
                                 f"{list(image.shape)}")
            image = self.normalize(image)
            image, target = self.resize(image, targets[i] if targets else None)
            images[i] = image
            if targets is not None:
                targets[i] = target
        image_sizes = [tuple(img.shape[-2:]) for img in images]
        batch = self.batch_images(images)  # (B, 3, H_pad, W_pad)
        return ImageList(batch, image_sizes), targets

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if not image.is_floating_point():
            raise TypeError(f"images must be floating point in [0, 1], got "
                            f"{image.dtype}")
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def resize(self, image: torch.Tensor, target: dict | None = None):
        h, w = image.shape[-2:]
        if self.training:
            # One draw per image, even from a single size (torchvision's RNG use).
            k = int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())
            size = self.min_size[k]
        else:
            size = self.min_size[-1]
        scale = min(size / min(h, w), self.max_size / max(h, w))
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear",
                              recompute_scale_factor=True,
                              align_corners=False)[0]  # (3, H', W')
        if target is None:
            return image, None
        if "masks" in target:
            masks = target["masks"]
            target["masks"] = F.interpolate(
                masks[:, None].float(), scale_factor=scale,
                recompute_scale_factor=True)[:, 0].byte()  # (N, H', W') nearest
        target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target

    def batch_images(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Zero-pad to the largest height and width, rounded up to a multiple of
        ``size_divisible``."""
        stride = float(self.size_divisible)
        C = max(img.shape[0] for img in images)
        H = int(math.ceil(max(img.shape[1] for img in images) / stride) * stride)
        W = int(math.ceil(max(img.shape[2] for img in images) / stride) * stride)
        batch = images[0].new_zeros((len(images), C, H, W))
        for img, padded in zip(images, batch):
            padded[: img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
        return batch

    def postprocess(self, result: list[dict[str, torch.Tensor]],
                    image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]
                    ) -> list[dict[str, torch.Tensor]]:
        """Detections in the resized images -> in the original ones, masks
        pasted into full images ``[D, 1, H, W]``."""
        if self.training:
            return result
        for pred, size, original in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred:
                pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"],
                                                     original)
        return result

    def extra_repr(self) -> str:
        return (f"min_size={self.min_size}, max_size={self.max_size}, "
                f"mean={self.image_mean}, std={self.image_std}, "
                f"size_divisible={self.size_divisible}")
