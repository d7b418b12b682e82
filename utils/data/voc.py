"""PASCAL VOC 2012 segmentation (+ SBD ``train_aug``), as prepared by
``python -m data_scripts.voc --root DIR``.

Layout under ``DIR``: ``VOC2012/`` (the official tree: ``JPEGImages``,
``SegmentationClass`` palette PNGs, ``ImageSets/Segmentation/{train,val,
trainval}.txt``), and with SBD ``SegmentationClassAug/`` and
``ImageSets/train_aug.txt`` (10,582 images). Labels are class ids 0-20, 255
on object borders and "difficult" regions.
"""

from __future__ import annotations

from pathlib import Path

from utils.data.files import SegmentationFiles, read_ids
from utils.data.formats import voc_palette

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
NUM_CLASSES = len(CLASSES)
PALETTE = voc_palette(256)  # the official colour map; 255 is (224, 224, 192)
SPLITS = ("train", "val", "trainval", "train_aug")


def has_train_aug(root) -> bool:
    return (Path(root) / "ImageSets" / "train_aug.txt").is_file()


class VOCSegmentation(SegmentationFiles):
    """One split of VOC 2012: ``train``, ``val``, ``trainval`` or ``train_aug``."""

    def __init__(self, root, split: str = "train", transform=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        voc = root / "VOC2012"
        if split == "train_aug":
            ids = read_ids(root / "ImageSets" / "train_aug.txt")
            labels = root / "SegmentationClassAug"
        else:
            ids = read_ids(voc / "ImageSets" / "Segmentation" / f"{split}.txt")
            labels = voc / "SegmentationClass"
        pairs = [(voc / "JPEGImages" / f"{i}.jpg", labels / f"{i}.png") for i in ids]
        super().__init__(pairs, None, transform, CLASSES)
        self.split = split
