"""Cityscapes (fine annotations, 19 classes), as prepared by
``python -m data_scripts.cityscapes``.

Layout under ``DIR``: the official ``leftImg8bit/{train,val,test}/<city>/``
images and ``gtFine/{split}/<city>/`` labels, where the script added
``*_gtFine_labelTrainIds.png`` (the 19 trainIds, 255 = ignore) next to each
``*_gtFine_labelIds.png``, as cityscapesScripts names them. The test split's
labels are withheld by the benchmark (all ignore).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.data.files import SegmentationFiles
from utils.data.formats import CITYSCAPES_CLASSES

CLASSES = CITYSCAPES_CLASSES
NUM_CLASSES = len(CLASSES)
SPLITS = ("train", "val", "test")  # 2,975 / 500 / 1,525 images
# The official colours (cityscapesScripts' labels.py), in trainId order.
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[:NUM_CLASSES] = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]  # fmt: skip
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"

def label_path(root, image: Path) -> Path:
    """The trainId label of a ``leftImg8bit`` image."""
    split, city = image.parent.parent.name, image.parent.name
    stem = image.name[: -len(IMAGE_SUFFIX)]
    return Path(root) / "gtFine" / split / city / (stem + TRAIN_IDS_SUFFIX)

class Cityscapes(SegmentationFiles):
    """One split of Cityscapes: ``train``, ``val`` or ``test``."""

    def __init__(self, root, split: str = "train", transform=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        images = sorted((Path(root) / "leftImg8bit" / split).glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            raise FileNotFoundError(
                f"no images in {Path(root) / 'leftImg8bit' / split}; prepare "
                "Cityscapes with python -m data_scripts.cityscapes --root DIR")
        pairs = [(p, label_path(root, p)) for p in images]
        super().__init__(pairs, None, transform, CLASSES)
        self.split = split
