"""Shapes: the course's built-in synthetic dataset (introduced in chapter 00).

Each image is a background of amorphous *stuff* regions, told apart by texture,
with *things* (circles, squares, triangles, rings and crosses) painted on top.
Colours are drawn independently of class, so shape (and, for stuff, texture)
decides the class, never colour. Objects range from a few pixels to half the
image, are rotated, occlude one another, sometimes touch another instance of
the same class, and rings and crosses can be thin.

One sample carries the targets of all three tasks, consistent with each other:

- semantic ``int64 [H, W]``: class ids (:data:`CLASSES`), 255 = ignore;
- instances: ``boxes float32 [N, 4]`` (x1, y1, x2, y2; pixel ``i`` covers
  ``[i, i + 1)``, so ``x2 = last column + 1``), ``labels int64 [N]`` (semantic
  ids of the thing classes) and ``masks uint8 [N, H, W]``;
- panoptic ``int64 [H, W, 2]``: (category, instance id); instance ids count
  1..N in the order of the instance list, stuff has id 0, void is (255, 0).

Fragments of things that occlusion leaves smaller than ``min_visible`` pixels
are void in every target (255 in semantic and panoptic, no instance).

Generation is deterministic per (seed, split, index) and needs no download.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from utils.data import IGNORE_INDEX
from utils.data.targets import boxes_from_masks, drop_small_instances, edge_band

STUFF_CLASSES = ("smooth", "striped", "speckled")
THING_CLASSES = ("circle", "square", "triangle", "ring", "cross")
CLASSES = STUFF_CLASSES + THING_CLASSES
NUM_CLASSES = len(CLASSES)
STUFF_IDS = tuple(range(len(STUFF_CLASSES)))
THING_IDS = tuple(range(len(STUFF_CLASSES), NUM_CLASSES))
SPLITS = {"train": 0, "val": 1, "test": 2}
TASKS = ("semantic", "instance", "panoptic", "all")

_CIRCLE, _SQUARE, _TRIANGLE, _RING, _CROSS = THING_IDS
# Unit normals of an upward-pointing equilateral triangle's three sides.
_TRIANGLE_NORMALS = np.array(
    [[np.cos(a), np.sin(a)] for a in np.deg2rad([90.0, 210.0, 330.0])], np.float32
)


@dataclass(frozen=True)
class ShapesConfig:
    """The knobs of :class:`Shapes`."""

    image_size: int = 128  # side of the square image, pixels
    min_objects: int = 1  # fewest things per image
    max_objects: int = 6  # most things per image
    noise: float = 0.03  # standard deviation of Gaussian pixel noise, image units
    difficulty: float = 0.5  # 0 easy .. 1 hard: smaller, thinner, lower contrast
    ignore_border: int = 0  # VOC-style 255 band around things, px across (even)
    min_visible: int = 6  # fragments smaller than this (pixels) become void
    touch_prob: float = 0.3  # chance that a thing is placed touching the previous
    stuff_regions: int = 4  # coarseness of stuff: grid cells per side of the map

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(
                f"image_size must be an int >= 16, got {self.image_size!r}"
            )
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(
                "need 0 <= min_objects <= max_objects, got "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if self.ignore_border < 0 or self.min_visible < 0:
            raise ValueError("ignore_border and min_visible must be >= 0")
        if not 0.0 <= self.touch_prob <= 1.0:
            raise ValueError(f"touch_prob must be in [0, 1], got {self.touch_prob}")
        if self.stuff_regions < 1:
            raise ValueError(f"stuff_regions must be >= 1, got {self.stuff_regions}")


@dataclass
class ShapesSample:
    """Everything generated for one index, as NumPy arrays."""

    image: np.ndarray  # float32 [3, H, W] in [0, 1]
    class_map: np.ndarray  # int64 [H, W], class ids, 255 = void
    ignore_band: np.ndarray  # bool [H, W], the optional VOC-style border band
    instance_map: np.ndarray  # int32 [H, W], 0 = no thing, k = k-th instance
    labels: np.ndarray  # int64 [N], semantic id of each instance

    @property
    def semantic(self) -> np.ndarray:
        """int64 [H, W] semantic target: the class map with the band ignored."""
        if not self.ignore_band.any():
            return self.class_map
        return np.where(self.ignore_band, IGNORE_INDEX, self.class_map)

    def masks(self) -> np.ndarray:
        """uint8 [N, H, W] binary masks, one per instance."""
        ids = np.arange(1, len(self.labels) + 1, dtype=np.int32)
        return (self.instance_map[None] == ids[:, None, None]).astype(np.uint8)

    def boxes(self) -> np.ndarray:
        """float32 [N, 4] boxes (x1, y1, x2, y2) that enclose each mask."""
        return boxes_from_masks(self.masks()).numpy()

    def panoptic(self) -> np.ndarray:
        """int64 [H, W, 2]: (category, instance id); void is (255, 0).

        The ignore band is a semantic-segmentation convention; panoptic keeps
        the class there.
        """
        return np.stack([self.class_map, self.instance_map.astype(np.int64)], -1)


@lru_cache(maxsize=16)
def _upsampling_matrix(cells: int, size: int) -> np.ndarray:
    """[size, cells + 1] bilinear interpolation weights from a coarse grid."""
    pos = (np.arange(size) + 0.5) / size * cells
    lo = np.floor(pos).astype(int)
    frac = (pos - lo).astype(np.float32)
    mat = np.zeros((size, cells + 1), np.float32)
    mat[np.arange(size), lo] = 1 - frac
    mat[np.arange(size), lo + 1] = frac
    return mat


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return ys, xs


@lru_cache(maxsize=8)
def fixed_textures(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed noise and speckle textures twice the image size.

    Each sample reads a window at a random offset: to a network this is fresh
    noise, and it costs a slice instead of drawing 3·H·W normal numbers
    (which would take half of the whole sample's time).
    """
    rng = np.random.default_rng(20121)
    noise = rng.standard_normal((3, 2 * size, 2 * size), dtype=np.float32)
    speckle = rng.random((2 * size, 2 * size), dtype=np.float32) < 0.2
    return noise, speckle


def generate(config: ShapesConfig, rng: np.random.Generator) -> ShapesSample:
    """Generate one sample from ``rng``; :class:`Shapes` calls this per index."""
    size = config.image_size
    hard = config.difficulty
    image, semantic = _paint_stuff(config, rng)  # (3, H, W), (H, W) int64
    instance_map = np.zeros((size, size), np.int32)
    labels = []

    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    min_radius = 6.0 - 4.0 * hard  # from a few pixels ...
    max_radius = size / 4.0  # ... to half the image across
    previous = None
    for _ in range(count):
        radius = float(np.exp(rng.uniform(np.log(min_radius), np.log(max_radius))))
        if previous is not None and rng.random() < config.touch_prob:
            # Touch the previous thing, same class: the case that separates
            # instance from semantic segmentation.
            cls, (py, px), pr = previous
            angle = rng.uniform(0, 2 * np.pi)
            dist = pr + radius
            cy, cx = py + dist * np.sin(angle), px + dist * np.cos(angle)
        else:
            cls = int(rng.choice(THING_IDS))
            cy, cx = rng.uniform(0, size, 2)
        rotation = rng.uniform(0, 2 * np.pi)
        thickness = max(1.0, radius * rng.uniform(0.35 - 0.25 * hard, 0.5))
        window, mask = _thing_mask(cls, cy, cx, radius, rotation, thickness, size)
        if mask is None:
            continue
        colour = rng.random(3, dtype=np.float32)
        image[(slice(None),) + window][:, mask] = colour[:, None]
        semantic[window][mask] = cls
        instance_map[window][mask] = len(labels) + 1
        labels.append(cls)
        previous = (cls, (cy, cx), radius)

    # Occlusion can leave slivers; below min_visible they are void everywhere.
    instance_map, keep, void = drop_small_instances(instance_map, len(labels),
                                                    config.min_visible)
    semantic[void] = IGNORE_INDEX
    labels = [labels[k] for k in keep]

    if config.ignore_border > 0:
        # A band ignore_border pixels across a straight edge, half on each side.
        half = (config.ignore_border + 1) // 2
        band = edge_band(torch.from_numpy(instance_map), half).numpy()
    else:
        band = np.zeros((size, size), bool)

    if config.noise > 0:
        noise_tile, _ = fixed_textures(size)
        oy, ox = rng.integers(0, size, 2)
        image += noise_tile[:, oy : oy + size, ox : ox + size] * config.noise
    np.clip(image, 0.0, 1.0, out=image)
    return ShapesSample(image, semantic, band, instance_map, np.array(labels, np.int64))


def _paint_stuff(config: ShapesConfig, rng) -> tuple[np.ndarray, np.ndarray]:
    """Amorphous stuff regions: the argmax of three smooth random fields."""
    size, cells = config.image_size, config.stuff_regions
    up = _upsampling_matrix(cells, size)
    coarse = rng.random((len(STUFF_CLASSES), cells + 1, cells + 1), dtype=np.float32)
    f0, f1, f2 = up @ coarse @ up.T  # three smooth (H, W) fields
    # argmax over three fields, written out: three times faster than argmax(0).
    stuff = np.where(f0 >= f1, np.where(f0 >= f2, 0, 2), np.where(f1 >= f2, 1, 2))
    ys, xs = _grid(size)
    _, speckle_tile = fixed_textures(size)

    contrast = 0.35 - 0.25 * config.difficulty
    colours = rng.random((3, len(STUFF_CLASSES)), dtype=np.float32)  # (RGB, class)
    # One texture per stuff class, computed everywhere, then chosen per pixel.
    # smooth: a gentle gradient.
    gy, gx = (rng.uniform(-1, 1, 2) * 0.15 / size).astype(np.float32)
    smooth = gy * ys + gx * xs
    # striped: a sine grating with random period and angle.
    period = rng.uniform(4, 10)
    angle = rng.uniform(0, np.pi)
    ky, kx = (
        np.float32(2 * np.pi / period * np.sin(angle)),
        np.float32(2 * np.pi / period * np.cos(angle)),
    )
    striped = np.sin(ky * ys + kx * xs) * np.float32(contrast)
    # speckled: sparse dots, bright on a dark region and dark on a bright one.
    oy, ox = rng.integers(0, size, 2)
    dots = speckle_tile[oy : oy + size, ox : ox + size]
    sign = 1.0 if colours[:, 2].mean() < 0.5 else -1.0
    speckled = dots * np.float32(sign * 2 * contrast)
    shade = np.choose(stuff, (smooth, striped, speckled))
    image = np.stack([np.take(colours[c], stuff) + shade for c in range(3)])
    return image, stuff


def _thing_mask(cls, cy, cx, radius, rotation, thickness, size):
    """Boolean mask of one thing inside its clipped bounding window."""
    reach = radius + 1.0
    y0, y1 = max(0, int(cy - reach)), min(size, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(cx - reach)), min(size, int(np.ceil(cx + reach)) + 1)
    if y0 >= y1 or x0 >= x1:
        return None, None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    c, s = np.cos(rotation), np.sin(rotation)
    u = dx * c + dy * s  # coordinates in the shape's own frame
    v = dy * c - dx * s
    if cls == _CIRCLE:
        mask = u * u + v * v <= radius * radius
    elif cls == _SQUARE:
        half = radius * 0.8
        mask = (np.abs(u) <= half) & (np.abs(v) <= half)
    elif cls == _TRIANGLE:
        inradius = radius / 2
        n = _TRIANGLE_NORMALS
        mask = u * n[0, 0] + v * n[0, 1] <= inradius
        mask &= u * n[1, 0] + v * n[1, 1] <= inradius
        mask &= u * n[2, 0] + v * n[2, 1] <= inradius
    elif cls == _RING:
        r2 = u * u + v * v
        inner = max(radius - thickness, 0.0)
        mask = (r2 <= radius * radius) & (r2 >= inner * inner)
    else:  # cross
        half = thickness / 2
        au, av = np.abs(u), np.abs(v)
        mask = ((au <= half) & (av <= radius)) | ((av <= half) & (au <= radius))
    if not mask.any():
        return None, None
    return (slice(y0, y1), slice(x0, x1)), mask


class Shapes(torch.utils.data.Dataset):
    """The Shapes dataset: ``length`` samples of one split, generated on the fly.

    ``dataset[i]`` returns ``(image, target)``: image ``float32 [3, H, W]`` in
    [0, 1]; the target depends on ``task``:

    - ``"semantic"``: ``int64 [H, W]``, 255 = ignore;
    - ``"instance"``: dict of ``boxes``, ``labels``, ``masks`` (see module doc);
    - ``"panoptic"``: ``int64 [H, W, 2]``;
    - ``"all"``: dict with ``semantic``, ``boxes``, ``labels``, ``masks`` and
      ``panoptic``.

    ``transform``, when given, is a joint transform from
    :mod:`utils.data.transforms` applied to ``(image, target)``.
    """

    classes = CLASSES
    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        split: str = "train",
        length: int = 1000,
        config: ShapesConfig | None = None,
        task: str = "semantic",
        seed: int = 0,
        transform=None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be a non-negative int, got {length!r}")
        self.split, self.length, self.task, self.seed = split, length, task, seed
        self.config = config or ShapesConfig()
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> ShapesSample:
        """The raw NumPy sample at ``index`` (no transform)."""
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        index %= self.length
        rng = np.random.default_rng((self.seed, SPLITS[self.split], index))
        return self.generate(rng)

    def generate(self, rng: np.random.Generator) -> ShapesSample:
        return generate(self.config, rng)

    def __getitem__(self, index: int):
        s = self.sample(index)
        image = torch.from_numpy(s.image)
        target = to_target(s, self.task)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def budget_splits(budget) -> tuple[Shapes, Shapes]:
    """The training and validation sets a budget (``utils.budgets.Budget``)
    names: ``train_size`` and ``val_size`` images of ``image_size`` pixels."""
    config = ShapesConfig(image_size=budget.image_size)
    return (Shapes("train", budget.train_size, config),
            Shapes("val", budget.val_size, config))


def to_target(sample: ShapesSample, task: str):
    """The torch target of ``task`` for one :class:`ShapesSample`."""
    if task == "semantic":
        return torch.from_numpy(sample.semantic)
    if task == "panoptic":
        return torch.from_numpy(sample.panoptic())
    instances = {
        "boxes": torch.from_numpy(sample.boxes()),
        "labels": torch.from_numpy(sample.labels),
        "masks": torch.from_numpy(sample.masks()),
    }
    if task == "instance":
        return instances
    return {
        "semantic": torch.from_numpy(sample.semantic),
        **instances,
        "panoptic": torch.from_numpy(sample.panoptic()),
    }


# Muted colours for stuff, saturated ones for things, white for ignore.
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[: NUM_CLASSES] = [
    (84, 84, 84), (150, 120, 90), (90, 130, 160),  # smooth, striped, speckled
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
]  # fmt: skip
PALETTE[IGNORE_INDEX] = (255, 255, 255)
