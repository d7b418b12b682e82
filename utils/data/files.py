"""A semantic-segmentation dataset read from image and label files.

The readers of the real datasets (:mod:`utils.data.voc`, ``pets``, ``camvid``,
``cityscapes``) are this class with the dataset's file lists and label
mapping. Samples follow the data contract (:mod:`utils.data.shapes`): image
``float32 [3, H, W]`` in [0, 1], target ``int64 [H, W]`` with 255 = ignore.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from utils.data.formats import read_label_png


def read_image(path) -> torch.Tensor:
    """An image file as ``float32 [3, H, W]`` in [0, 1] (grey and CMYK to RGB)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = np.array(img.convert("RGB"))  # a writable copy for torch
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def read_ids(path) -> list[str]:
    """The non-empty lines of a split list such as VOC's ``train.txt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist; prepare the "
                                "dataset with its data_scripts command first")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class SegmentationFiles(torch.utils.data.Dataset):
    """Pairs of (image file, label file) as contract samples.

    ``lut`` (``uint8 [256]``, optional) maps the stored label values to class
    ids and 255; ``transform(image, target)`` is applied jointly.
    """

    def __init__(self, pairs, lut: np.ndarray | None = None, transform=None,
                 classes: tuple[str, ...] = ()):
        self.pairs = [(Path(i), Path(t)) for i, t in pairs]
        if not self.pairs:
            raise ValueError("no samples found")
        self.lut = None if lut is None else np.asarray(lut, np.int64)
        self.transform = transform
        self.classes = classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = read_label_png(label_path)
        if self.lut is not None:
            label = self.lut[label]
        target = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
        if tuple(target.shape) != tuple(image.shape[1:]):
            raise ValueError(f"{label_path} is {list(target.shape)} but "
                             f"{image_path} is {list(image.shape[1:])}")
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
