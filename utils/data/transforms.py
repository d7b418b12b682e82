"""Joint transforms: the same geometry applied to an image and its target.

Every transform is called as ``image, target = t(image, target)`` with

- ``image``: ``float32 [3, H, W]``;
- ``target``: a semantic map ``int64 [H, W]`` (255 = ignore), a panoptic map
  ``int64 [H, W, 2]``, an instance dict (``boxes float32 [N, 4]``,
  ``labels int64 [N]``, ``masks uint8 [N, H, W]``), or a dict holding any of
  ``semantic``, ``panoptic`` and the instance keys (Shapes' ``task="all"``).

Labels are resampled with nearest neighbour (a label is a name, not a number to
interpolate); images bilinearly. Pixels that padding invents are 255 in
semantic maps, void in panoptic maps and 0 in images (:class:`ElasticDeformation`
reflects the image instead). Instance boxes are
recomputed from the transformed masks, and instances that leave the image are
dropped. Randomness comes from torch's global generator, so
:func:`utils.runtime.seed_everything` makes it repeatable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from utils.data import IGNORE_INDEX
from utils.data.targets import boxes_from_masks

INSTANCE_KEYS = ("boxes", "labels", "masks")


def check_pair(image: torch.Tensor, target) -> None:
    """Raise ``ValueError`` unless ``(image, target)`` follows the data contract."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dtype != torch.float32 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"image must be float32 [3, H, W], got {image.dtype} {list(image.shape)}"
        )
    size = tuple(image.shape[1:])
    for name, value in _maps(target):
        if value.dtype != torch.int64:
            raise ValueError(f"{name} must be int64, got {value.dtype}")
        if tuple(value.shape[:2]) != size:
            raise ValueError(
                f"{name} has size {list(value.shape[:2])} but the image is {list(size)}"
            )
    inst = _instances(target)
    if inst is not None:
        masks, boxes, labels = inst["masks"], inst["boxes"], inst["labels"]
        if masks.dtype != torch.uint8 or masks.ndim != 3:
            raise ValueError(
                f"masks must be uint8 [N, H, W], got {masks.dtype} {list(masks.shape)}"
            )
        if tuple(masks.shape[1:]) != size:
            raise ValueError(
                f"masks have size {list(masks.shape[1:])} but the image is {list(size)}"
            )
        n = masks.shape[0]
        if boxes.shape != (n, 4) or labels.shape != (n,):
            raise ValueError(
                f"{n} masks need boxes [{n}, 4] and labels [{n}], got boxes "
                f"{list(boxes.shape)} and labels {list(labels.shape)}"
            )


def _maps(target):
    """(name, tensor) of the dense maps in ``target``."""
    if isinstance(target, torch.Tensor):
        if target.ndim == 2:
            return [("semantic target", target)]
        if target.ndim == 3 and target.shape[-1] == 2:
            return [("panoptic target", target)]
        raise ValueError(
            "target must be semantic [H, W] or panoptic [H, W, 2], got shape "
            f"{list(target.shape)}"
        )
    if isinstance(target, dict):
        unknown = set(target) - {"semantic", "panoptic", *INSTANCE_KEYS}
        if unknown:
            raise ValueError(f"unknown target keys {sorted(unknown)}")
        return [(k, target[k]) for k in ("semantic", "panoptic") if k in target]
    raise TypeError(f"target must be a tensor or a dict, got {type(target).__name__}")


def _instances(target):
    if isinstance(target, dict) and any(k in target for k in INSTANCE_KEYS):
        missing = [k for k in INSTANCE_KEYS if k not in target]
        if missing:
            raise ValueError(f"instance target is missing {missing}")
        return target
    return None


def _apply(target, fn_map, fn_masks):
    """Apply ``fn_map(tensor, fill)`` to dense maps and ``fn_masks`` to masks."""
    if isinstance(target, torch.Tensor):
        return fn_map(target)
    out = dict(target)
    for key in ("semantic", "panoptic"):
        if key in out:
            out[key] = fn_map(out[key])
    if _instances(target) is not None:
        out.update(_fix_instances(fn_masks(target["masks"]), target["labels"]))
    return out


def _fix_instances(masks: torch.Tensor, labels: torch.Tensor) -> dict:
    """Drop empty masks and recompute boxes (x2, y2 exclusive) from the rest."""
    keep = masks.flatten(1).bool().any(dim=1)
    masks, labels = masks[keep], labels[keep]
    return {"boxes": boxes_from_masks(masks), "labels": labels, "masks": masks}


def _resize_labels(label: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize of ``[H, W]`` or ``[H, W, C]`` integer maps."""
    x = label.unsqueeze(0) if label.ndim == 2 else label.permute(2, 0, 1)
    y = F.interpolate(x[None].float(), size=size, mode="nearest-exact")[0]
    y = y.to(label.dtype)
    return y[0] if label.ndim == 2 else y.permute(1, 2, 0).contiguous()


def _pad_crop(x: torch.Tensor, top: int, left: int, size, fill, channels_last):
    """Crop ``size`` at (top, left); parts outside ``x`` are filled with ``fill``."""
    h, w = size
    H, W = (x.shape[0], x.shape[1]) if channels_last else (x.shape[-2], x.shape[-1])
    shape = (
        (h, w) + tuple(x.shape[2:]) if channels_last else tuple(x.shape[:-2]) + (h, w)
    )
    out = torch.empty(shape, dtype=x.dtype)
    out[...] = fill  # a number, or one value per channel for panoptic maps
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y0 < y1 and x0 < x1:
        if channels_last:
            out[y0 - top : y1 - top, x0 - left : x1 - left] = x[y0:y1, x0:x1]
        else:
            out[..., y0 - top : y1 - top, x0 - left : x1 - left] = x[..., y0:y1, x0:x1]
    return out


def _panoptic_fill(p: torch.Tensor) -> torch.Tensor:
    return torch.tensor([IGNORE_INDEX, 0], dtype=p.dtype)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self):
        return f"Compose({self.transforms})"


class RandomHorizontalFlip:
    """Mirror left to right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, target):
        check_pair(image, target)
        if torch.rand(()) >= self.p:
            return image, target

        def flip_map(m):
            return m.flip(1)  # width is dim 1 of [H, W] and [H, W, 2]

        return image.flip(-1), _apply(target, flip_map, lambda m: m.flip(-1))

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Resize:
    """Resize to ``size`` = (height, width): bilinear image, nearest labels."""

    def __init__(self, size):
        self.size = _pair(size)

    def __call__(self, image, target):
        check_pair(image, target)
        img = F.interpolate(
            image[None], size=self.size, mode="bilinear", align_corners=False
        )[0].clamp_(0, 1)

        def masks(m):
            return _resize_labels(m.permute(1, 2, 0), self.size).permute(2, 0, 1)

        return img, _apply(target, lambda m: _resize_labels(m, self.size), masks)

    def __repr__(self):
        return f"Resize({self.size})"


class ResizeShorterSide:
    """Resize keeping the aspect ratio: the shorter side to ``size`` unless the
    longer side would then pass ``max_size`` (default ``ceil(size * 1333 /
    800)``, detectron's ratio), in which case the longer side to ``max_size``.

    The scale of Mask R-CNN's own resize (:mod:`utils.models.detection.
    transform`), done on the data so that real photographs reach the model at
    the budget's size (which the model's profile may still enlarge, boxes and
    masks with the image) and their metrics are measured at that size.
    """

    def __init__(self, size: int, max_size: int | None = None):
        self.size = size
        self.max_size = max_size or math.ceil(size * 1333 / 800)
        if not 0 < size <= self.max_size:
            raise ValueError(f"need 0 < size <= max_size, got {size}, {max_size}")

    def __call__(self, image, target):
        check_pair(image, target)
        h, w = image.shape[1:]
        scale = min(self.size / min(h, w), self.max_size / max(h, w))
        return Resize((max(1, round(h * scale)), max(1, round(w * scale))))(
            image, target)

    def __repr__(self):
        return f"ResizeShorterSide({self.size}, max_size={self.max_size})"


class RandomScale:
    """Scale both sides by one factor drawn uniformly from ``[low, high]``."""

    def __init__(self, low: float = 0.5, high: float = 2.0):
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
        self.low, self.high = low, high

    def __call__(self, image, target):
        check_pair(image, target)
        factor = self.low + (self.high - self.low) * float(torch.rand(()))
        h, w = image.shape[1:]
        size = (max(1, round(h * factor)), max(1, round(w * factor)))
        return Resize(size)(image, target)

    def __repr__(self):
        return f"RandomScale({self.low}, {self.high})"


class RandomCrop:
    """Crop ``size`` at a random position, padding first if the image is smaller.

    Padding is 0 in the image and ignore (255) / void in the targets, so padded
    pixels never count in a loss or a metric.
    """

    def __init__(self, size):
        self.size = _pair(size)

    def __call__(self, image, target):
        check_pair(image, target)
        h, w = self.size
        H, W = image.shape[1:]
        top = int(torch.randint(0, H - h + 1, ())) if H > h else 0
        left = int(torch.randint(0, W - w + 1, ())) if W > w else 0
        return self.crop(image, target, top, left)

    def crop(self, image, target, top, left):
        img = _pad_crop(image, top, left, self.size, 0.0, channels_last=False)

        def crop_map(m):
            fill = _panoptic_fill(m) if m.ndim == 3 else IGNORE_INDEX
            return _pad_crop(m, top, left, self.size, fill, channels_last=True)

        def crop_masks(m):
            return _pad_crop(m, top, left, self.size, 0, channels_last=False)

        return img, _apply(target, crop_map, crop_masks)

    def __repr__(self):
        return f"RandomCrop({self.size})"


class ElasticDeformation:
    """U-Net's elastic deformation (Ronneberger et al. 2015, Section 3.1;
    chapter 04): random displacements on a coarse ``grid x grid`` lattice,
    smoothly interpolated to every pixel, move image and target together.

    The displacements (in pixels, both axes) are drawn from a Gaussian with
    standard deviation ``sigma`` at the lattice points, which are spread evenly
    from corner to corner of the image, and interpolated bicubically in
    between (the paper: a 3x3 grid, ``sigma = 10`` px on 512-pixel images).
    Output pixel ``(y, x)`` takes the input at ``(y + dy, x + dx)``: the image
    bilinearly, reflected at its border where that point falls outside it
    (a plausible continuation that the target marks ignore anyway); labels by
    their nearest pixel, so every label is one of the input's, and 255 in
    semantic maps (void in panoptic maps, 0 in instance masks) where the
    nearest pixel lies outside the image. Applied with probability ``p``.
    """

    def __init__(self, grid: int = 3, sigma: float = 10.0, p: float = 1.0):
        if not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid must be an int >= 2, got {grid!r}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0 pixels, got {sigma}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.grid, self.sigma, self.p = grid, sigma, p

    def displacement(self, height: int, width: int) -> torch.Tensor:
        """A random field ``float32 [2, H, W]`` of (dy, dx) in pixels."""
        coarse = torch.randn(1, 2, self.grid, self.grid) * self.sigma
        field = F.interpolate(coarse, size=(height, width), mode="bicubic",
                              align_corners=True)  # lattice points at the corners
        return field[0]

    def __call__(self, image, target):
        check_pair(image, target)
        if torch.rand(()) >= self.p:
            return image, target
        H, W = image.shape[1:]
        return self.warp(image, target, self.displacement(H, W))

    def warp(self, image, target, field: torch.Tensor):
        """Apply the displacement ``field [2, H, W]`` (pixels) to both."""
        check_pair(image, target)
        H, W = image.shape[1:]
        ys = torch.arange(H, dtype=torch.float32)[:, None] + field[0]  # (H, W)
        xs = torch.arange(W, dtype=torch.float32)[None, :] + field[1]
        # grid_sample's coordinates (align_corners=False): -1 and 1 are the
        # outer edges of the border pixels, pixel i's centre is (2i + 1)/n - 1
        grid = torch.stack([(2 * xs + 1) / W - 1, (2 * ys + 1) / H - 1], -1)
        img = F.grid_sample(image[None], grid[None], mode="bilinear",
                            padding_mode="reflection", align_corners=False)[0]
        row, col = torch.round(ys).long(), torch.round(xs).long()
        inside = (row >= 0) & (row < H) & (col >= 0) & (col < W)
        row, col = row.clamp(0, H - 1), col.clamp(0, W - 1)

        def warp_map(m):
            out = m[row, col]  # (H, W) or (H, W, 2)
            fill = _panoptic_fill(m) if m.ndim == 3 else IGNORE_INDEX
            out[~inside] = fill
            return out

        def warp_masks(m):
            return m[:, row, col] * inside

        return img.clamp_(0, 1), _apply(target, warp_map, warp_masks)

    def __repr__(self):
        return f"ElasticDeformation(grid={self.grid}, sigma={self.sigma}, p={self.p})"


def _pair(size):
    if isinstance(size, int):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"size must be a positive int or (height, width), got {size}")
    return size


def train_transform(crop: int, scale=(0.5, 2.0)) -> Compose:
    """The usual training augmentation: random scale, crop and flip."""
    return Compose([RandomScale(*scale), RandomCrop(crop), RandomHorizontalFlip()])


def detection_transform(size: int, train: bool) -> Compose:
    """Instance and panoptic targets of real images (torchvision's Mask R-CNN
    recipe): the shorter side resized to ``size`` (:class:`ResizeShorterSide`)
    and, in training, a horizontal flip; whole images, never cropped."""
    steps = [ResizeShorterSide(size)]
    return Compose(steps + [RandomHorizontalFlip()] if train else steps)
