"""The datasets the command line knows: ``python -m utils.train --data NAME``.

Each entry builds one split as a dataset that follows the data contract:
``dataset[i] == (image float32 [3, H, W] in [0, 1], target int64 [H, W])`` with
255 = ignore. Real datasets (``data_scripts/``) add an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.data import IGNORE_INDEX, camvid, cityscapes, coco, pets, shapes, voc
from utils.data.transforms import RandomHorizontalFlip, train_transform


@dataclass(frozen=True)
class DatasetSpec:
    """How to build one dataset for semantic segmentation."""

    classes: tuple[str, ...]  # class names; index = label id
    palette: np.ndarray  # uint8 [256, 3] colours for plots
    # build(split, root, image_size, length, train) -> Dataset. ``length`` caps
    # the number of samples (None: all); ``train`` turns on augmentation.
    build: Callable[..., torch.utils.data.Dataset]
    needs_root: bool  # whether --data-root must point at a prepared copy
    about: str  # one line for --help


def _build_shapes(split, root, image_size, length, train):
    config = shapes.ShapesConfig(image_size=image_size)
    transform = RandomHorizontalFlip() if train else None
    return shapes.Shapes(split, length or 1000, config, transform=transform)


def _real(make):
    """A ``build`` for a prepared real dataset: ``make(root, split, transform)``.

    Training samples get a random scale in [0.5, 2], a crop to ``image_size``
    and a flip; validation samples are whole images (``pad_collate`` pads a
    batch of different sizes). ``length`` keeps the first samples.
    """

    def build(split, root, image_size, length, train):
        transform = train_transform(image_size) if train else None
        dataset = make(root, split, transform)
        if length is not None and length < len(dataset):
            dataset = torch.utils.data.Subset(dataset, range(length))
        return dataset

    return build


def _voc(root, split, transform):
    if split == "train" and voc.has_train_aug(root):
        split = "train_aug"
    return voc.VOCSegmentation(root, split, transform)


def _pets(root, split, transform):
    return pets.OxfordPets(root, "trainval" if split == "train" else "test", transform)


def _camvid(root, split, transform):
    return camvid.CamVid(root, split, transform)


def _cityscapes(root, split, transform):
    return cityscapes.Cityscapes(root, split, transform)


def _coco(root, split, transform):
    return coco.COCO(root, split, "semantic", transform)


DATASETS: dict[str, DatasetSpec] = {
    "shapes": DatasetSpec(
        shapes.CLASSES, shapes.PALETTE, _build_shapes, False,
        "built-in synthetic Shapes (no download)",
    ),
    "voc": DatasetSpec(
        voc.CLASSES, voc.PALETTE, _real(_voc), True,
        "PASCAL VOC 2012 (train_aug when SBD was prepared): data_scripts.voc",
    ),
    "pets": DatasetSpec(
        pets.CLASSES, pets.PALETTE, _real(_pets), True,
        "Oxford-IIIT Pet trimaps, pet vs background (val = test): data_scripts.pets",
    ),
    "camvid": DatasetSpec(
        camvid.CLASSES, camvid.PALETTE, _real(_camvid), True,
        "CamVid, 11 classes (SegNet tutorial split): data_scripts.camvid",
    ),
    "cityscapes": DatasetSpec(
        cityscapes.CLASSES, cityscapes.PALETTE, _real(_cityscapes), True,
        "Cityscapes fine, 19 trainIds (your own zips): data_scripts.cityscapes",
    ),
    "coco": DatasetSpec(
        coco.CLASSES, coco.PALETTE, _real(_coco), True,
        "COCO 2017 as semantic maps, 80 things + background: data_scripts.coco",
    ),
}  # fmt: skip


def build_dataset(name, split, root=None, image_size=128, length=None, train=False):
    """Build split ``split`` of dataset ``name`` (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    spec = DATASETS[name]
    if spec.needs_root:
        if root is None:
            raise FileNotFoundError(
                f"dataset {name!r} needs --data-root (prepare it with "
                f"python -m data_scripts.{name} --root DIR)"
            )
        if not Path(root).is_dir():
            raise FileNotFoundError(f"data root {root} is not a directory")
    return spec.build(split, root, image_size, length, train)


def pad_collate(batch):
    """Stack ``(image, semantic)`` pairs of different sizes into one batch.

    Smaller items are padded at the bottom and right: images with 0, targets
    with 255, so padding never counts in a loss or a metric.
    """
    images, targets = zip(*batch)
    h = max(t.shape[-2] for t in targets)
    w = max(t.shape[-1] for t in targets)
    out_images = torch.zeros((len(batch), 3, h, w), dtype=images[0].dtype)
    out_targets = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)
    for k, (image, target) in enumerate(batch):
        out_images[k, :, : image.shape[1], : image.shape[2]] = image
        out_targets[k, : target.shape[0], : target.shape[1]] = target
    return out_images, out_targets
