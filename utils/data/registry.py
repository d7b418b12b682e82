"""The datasets the command line knows: ``python -m utils.train --data NAME``.

Each entry builds one split of one task as a dataset that follows the data
contract, ``dataset[i] == (image float32 [3, H, W] in [0, 1], target)``:

- ``"semantic"``: ``int64 [H, W]``, 255 = ignore;
- ``"instance"``: ``boxes float32 [N, 4]``, ``labels int64 [N]`` numbered
  1..T over the dataset's thing classes (0 is the detector's background; label
  k is semantic class ``thing_ids[k - 1]``), ``masks uint8 [N, H, W]``;
- ``"panoptic"``: the instance keys, plus ``semantic`` and ``panoptic``
  (``int64 [H, W, 2]``: semantic category, instance id).

A dataset whose tasks number their classes differently names each task's
classes in ``DatasetSpec.per_task`` (:meth:`DatasetSpec.for_task`). COCO:
the semantic and instance tasks have 81 classes (background + the 80 things);
the panoptic task has COCO panoptic 2017's 133 categories, indexed 0..132 in
the order of their COCO ids (:data:`utils.data.coco.PANOPTIC_CATEGORIES`):
the things 0..79 (instance labels 1..80), the stuff 80..132, void 255 (crowd
regions too). That is the contiguous indexing detectron2 uses, and Panoptic
FPN's semantic branch then predicts 54 classes, "a thing" and the 53 stuff
(:mod:`utils.models.panoptic.panoptic_fpn`), as detectron2's COCO model does.
Deviation from detectron2: crowd regions are void in the semantic target too
(ignored by the loss), where its ``prepare_panoptic_fpn`` labels them "a
thing".

Real datasets (``data_scripts/``) add an entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.data import IGNORE_INDEX, camvid, cityscapes, coco, pets, shapes, voc
from utils.data.targets import instances_from_panoptic
from utils.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    detection_transform,
    train_transform,
)


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
    tasks: tuple[str, ...] = ("semantic",)  # the targets it can give
    thing_ids: tuple[int, ...] = ()  # semantic ids of the thing classes
    # task -> {"classes": ..., "palette": ..., "thing_ids": ...} where a task
    # numbers its classes otherwise (COCO's panoptic 133 categories)
    per_task: dict = field(default_factory=dict)

    def for_task(self, task: str) -> DatasetSpec:
        """This spec with the classes, palette and thing ids of ``task``."""
        if task not in self.per_task:
            return self
        return dataclasses.replace(self, **self.per_task[task], per_task={})

    @property
    def instance_classes(self) -> tuple[str, ...]:
        """Class names of the instance task: background, then the things."""
        return ("background",) + tuple(self.classes[i] for i in self.thing_ids)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.classes)) if i not in self.thing_ids)


class ThingLabels:
    """Joint transform: instance labels from semantic ids to 1..T (the
    position of the id in ``thing_ids``, plus one)."""

    def __init__(self, thing_ids):
        self.lookup = torch.zeros(max(thing_ids) + 1, dtype=torch.int64)
        self.lookup[list(thing_ids)] = torch.arange(1, len(thing_ids) + 1)

    def __call__(self, image, target):
        return image, {**target, "labels": self.lookup[target["labels"]]}


class PanopticTargets:
    """Joint transform: a panoptic map ``int64 [H, W, 2]`` to all of Panoptic
    FPN's targets, as Shapes gives them: ``semantic`` (its categories, 255 =
    void), Mask R-CNN's ``boxes``, ``labels`` (1..T) and ``masks``
    (:func:`utils.data.targets.instances_from_panoptic`) and ``panoptic``.
    Applied after the geometric transforms, so masks and map always agree."""

    def __init__(self, thing_ids):
        self.thing_ids = tuple(thing_ids)

    def __call__(self, image, target):
        return image, {"semantic": target[..., 0].clone(),
                       **instances_from_panoptic(target, self.thing_ids),
                       "panoptic": target}


def _build_shapes(split, root, image_size, length, train, task="semantic"):
    config = shapes.ShapesConfig(image_size=image_size)
    steps = [RandomHorizontalFlip()] if train else []
    if task != "semantic":
        steps.insert(0, ThingLabels(shapes.THING_IDS))
    transform = Compose(steps) if steps else None
    source_task = {"semantic": "semantic", "instance": "instance",
                   "panoptic": "all"}[task]
    return shapes.Shapes(split, length or 1000, config, task=source_task,
                         transform=transform)


def _real(make):
    """A ``build`` for a prepared real dataset: ``make(root, split, transform)``.

    Semantic training samples get a random scale in [0.5, 2], a crop to
    ``image_size`` and a flip; semantic validation samples are whole images
    (``pad_collate`` pads a batch of different sizes). Instance and panoptic
    samples of both splits are whole images with their shorter side resized
    to ``image_size`` (Mask R-CNN's recipe: whole images), and flipped in
    training (:func:`~utils.data.transforms.detection_transform`); so their
    metrics are measured at that size, not at the images' own. ``length``
    keeps the first samples.
    """

    def build(split, root, image_size, length, train, task="semantic"):
        if task == "semantic":
            transform = train_transform(image_size) if train else None
        else:
            transform = detection_transform(image_size, train)
        dataset = make(root, split, transform, task)
        if length is not None and length < len(dataset):
            dataset = torch.utils.data.Subset(dataset, range(length))
        return dataset

    return build


def _voc(root, split, transform, task):
    if split == "train" and voc.has_train_aug(root):
        split = "train_aug"
    return voc.VOCSegmentation(root, split, transform)


def _pets(root, split, transform, task):
    return pets.OxfordPets(root, "trainval" if split == "train" else "test", transform)


def _camvid(root, split, transform, task):
    return camvid.CamVid(root, split, transform)


def _cityscapes(root, split, transform, task):
    return cityscapes.Cityscapes(root, split, transform)


def _coco(root, split, transform, task):
    if task == "panoptic":
        transform = Compose([transform, PanopticTargets(coco.PANOPTIC_THING_IDS)])
    return coco.COCO(root, split, task, transform)


DATASETS: dict[str, DatasetSpec] = {
    "shapes": DatasetSpec(
        shapes.CLASSES, shapes.PALETTE, _build_shapes, False,
        "built-in synthetic Shapes (no download)",
        ("semantic", "instance", "panoptic"), shapes.THING_IDS,
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
        "COCO 2017: semantic maps (80 things + background), instances, or "
        "panoptic (133 categories; prepared with --panoptic): data_scripts.coco",
        ("semantic", "instance", "panoptic"), tuple(range(1, coco.NUM_CLASSES)),
        {"panoptic": {"classes": coco.PANOPTIC_CLASSES,
                      "palette": coco.PANOPTIC_PALETTE,
                      "thing_ids": coco.PANOPTIC_THING_IDS}},
    ),
}  # fmt: skip


def build_dataset(name, split, root=None, image_size=128, length=None, train=False,
                  task="semantic"):
    """Build split ``split`` of dataset ``name`` for ``task`` (see
    :data:`DATASETS`)."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    spec = DATASETS[name]
    if task not in spec.tasks:
        raise ValueError(f"dataset {name!r} has no {task} targets; it has "
                         f"{', '.join(spec.tasks)}")
    if spec.needs_root:
        if root is None:
            raise FileNotFoundError(
                f"dataset {name!r} needs --data-root (prepare it with "
                f"python -m data_scripts.{name} --root DIR)"
            )
        if not Path(root).is_dir():
            raise FileNotFoundError(f"data root {root} is not a directory")
    return spec.build(split, root, image_size, length, train, task)


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
