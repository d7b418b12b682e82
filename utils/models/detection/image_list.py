"""A batch of images of different sizes as one padded tensor (chapter 08).

Detection models resize each image on its own (keeping its aspect ratio), pad
them to one size and remember the sizes before padding: anchors, proposals and
detections must not leave the real image. Same fields as torchvision's
``ImageList``, so code written against either runs on both.
"""

from __future__ import annotations

import torch


class ImageList:
    """``tensors``: ``float [N, C, H, W]``, the padded batch; ``image_sizes``:
    ``[(height, width)]``, each image's size before padding (``<= (H, W)``)."""

    def __init__(self, tensors: torch.Tensor, image_sizes: list[tuple[int, int]]):
        if tensors.ndim != 4 or len(image_sizes) != tensors.shape[0]:
            raise ValueError(f"expected tensors [N, C, H, W] and N image sizes, got "
                             f"{list(tensors.shape)} and {len(image_sizes)} sizes")
        self.tensors = tensors
        self.image_sizes = [tuple(int(v) for v in s) for s in image_sizes]

    def to(self, device: torch.device | str) -> ImageList:
        return ImageList(self.tensors.to(device), self.image_sizes)

    def __repr__(self) -> str:
        return (f"ImageList(tensors={list(self.tensors.shape)}, "
                f"image_sizes={self.image_sizes})")
