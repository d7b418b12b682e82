"""Cells: touching blobs, the Shapes variant for U-Net's border weights (chapter 04).

Microscopy images of cells are what U-Net was built for: cells of one class
pressed against each other, separated only by a thin, faint border. Semantic
segmentation sees one blob; separating the cells needs the border, and U-Net's
weight map makes the loss care about exactly those pixels.

Each image holds a few clusters of elliptical cells. Where two ellipses
overlap, each pixel goes to the cell whose centre is nearer in the ellipses'
own metric, which gives touching cells with a shared border. That border is
drawn slightly darker, like a membrane. Targets use the Shapes sample type:
semantic ``{0: background, 1: cell}`` (255 = void), instances (every label 1)
and panoptic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from utils.data import IGNORE_INDEX
from utils.data.shapes import Shapes, ShapesSample, fixed_textures
from utils.data.targets import drop_small_instances, label_edges

CLASSES = ("background", "cell")
NUM_CLASSES = len(CLASSES)
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[:NUM_CLASSES] = [(30, 30, 30), (80, 200, 120)]
PALETTE[IGNORE_INDEX] = (255, 255, 255)


@dataclass(frozen=True)
class CellsConfig:
    """The knobs of :class:`Cells`."""

    image_size: int = 128  # side of the square image, pixels
    min_cells: int = 4  # fewest cells per image
    max_cells: int = 14  # most cells per image
    radius: tuple[float, float] = (0.05, 0.11)  # cell radius range, image fraction
    cluster_prob: float = 0.8  # chance a cell is pressed against an earlier one
    membrane: float = 0.35  # how much darker the border between cells is, 0..1
    noise: float = 0.05  # standard deviation of Gaussian pixel noise
    min_visible: int = 6  # cells left smaller than this (pixels) become void

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(
                f"image_size must be an int >= 16, got {self.image_size!r}"
            )
        if not 1 <= self.min_cells <= self.max_cells:
            raise ValueError(
                "need 1 <= min_cells <= max_cells, got "
                f"min_cells={self.min_cells}, max_cells={self.max_cells}"
            )
        low, high = self.radius
        if not 0 < low <= high <= 0.5:
            raise ValueError(
                f"radius must satisfy 0 < low <= high <= 0.5, got {self.radius}"
            )
        if not 0 <= self.cluster_prob <= 1 or not 0 <= self.membrane <= 1:
            raise ValueError("cluster_prob and membrane must be in [0, 1]")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


def generate_cells(config: CellsConfig, rng: np.random.Generator) -> ShapesSample:
    """One Cells sample from ``rng``."""
    size = config.image_size
    count = int(rng.integers(config.min_cells, config.max_cells + 1))
    radii = rng.uniform(*config.radius, count) * size
    centres = np.empty((count, 2))
    for k in range(count):
        if k > 0 and rng.random() < config.cluster_prob:
            # Press against an earlier cell: centres closer than the radii sum,
            # so the two ellipses overlap and share a border.
            j = int(rng.integers(0, k))
            angle = rng.uniform(0, 2 * np.pi)
            dist = (radii[j] + radii[k]) * rng.uniform(0.75, 0.95)
            centres[k] = centres[j] + dist * np.array([np.sin(angle), np.cos(angle)])
        else:
            centres[k] = rng.uniform(0.1 * size, 0.9 * size, 2)
    stretch = rng.uniform(0.8, 1.25, count)  # axis ratio of each ellipse
    angles = rng.uniform(0, np.pi, count)

    ys = np.arange(size, dtype=np.float32)[None, :, None] + 0.5
    xs = np.arange(size, dtype=np.float32)[None, None, :] + 0.5
    dy = ys - centres[:, 0, None, None].astype(np.float32)
    dx = xs - centres[:, 1, None, None].astype(np.float32)
    c = np.cos(angles)[:, None, None].astype(np.float32)
    s = np.sin(angles)[:, None, None].astype(np.float32)
    a = (radii * stretch)[:, None, None].astype(np.float32)
    b = (radii / stretch)[:, None, None].astype(np.float32)
    dist = np.sqrt(((dx * c + dy * s) / a) ** 2 + ((dy * c - dx * s) / b) ** 2)
    owner = dist.argmin(axis=0)  # (H, W): nearest cell in its own metric
    nearest = np.take_along_axis(dist, owner[None], axis=0)[0]
    instance_map = np.where(nearest <= 1.0, owner + 1, 0).astype(np.int32)

    instance_map, keep, void = drop_small_instances(instance_map, count,
                                                    config.min_visible)
    class_map = (instance_map > 0).astype(np.int64)
    class_map[void] = IGNORE_INDEX

    # Cytoplasm brighter towards the centre; background dark; membranes darker.
    brightness = np.concatenate([[0.12], rng.uniform(0.55, 0.9, count)])
    image = brightness[np.where(instance_map > 0, owner + 1, 0)].astype(np.float32)
    image *= np.where(instance_map > 0, 1.0 - 0.3 * nearest**2, 1.0).astype(np.float32)
    # A membrane pixel touches a pixel of another cell (not the background).
    m = torch.from_numpy(instance_map)
    border = label_edges(m, valid=m > 0).numpy()
    image[border] *= 1.0 - config.membrane
    image = np.repeat(image[None], 3, axis=0)
    if config.noise > 0:
        noise_tile, _ = fixed_textures(size)
        oy, ox = rng.integers(0, size, 2)
        image += noise_tile[:, oy : oy + size, ox : ox + size] * config.noise
    np.clip(image, 0.0, 1.0, out=image)
    labels = np.ones(len(keep), np.int64)
    no_band = np.zeros((size, size), bool)
    return ShapesSample(image, class_map, no_band, instance_map, labels)


class Cells(Shapes):
    """The Cells dataset; the same interface and targets as :class:`Shapes`
    (``task`` = semantic, instance, panoptic or all), with two classes."""

    classes = CLASSES
    num_classes = NUM_CLASSES

    def __init__(
        self,
        split="train",
        length=1000,
        config: CellsConfig | None = None,
        task="semantic",
        seed=0,
        transform=None,
    ):
        super().__init__(split, length, None, task, seed, transform)
        self.config = config or CellsConfig()

    def generate(self, rng: np.random.Generator) -> ShapesSample:
        return generate_cells(self.config, rng)
