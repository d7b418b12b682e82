"""CamVid, the 11-class version of the SegNet tutorial, as prepared by
``python -m data_scripts.camvid``.

Layout under ``DIR``: ``CamVid/{train,val,test}/<name>.png`` images and
``CamVid/{train,val,test}annot/<name>.png`` labels (367 / 101 / 233 images of
360 x 480). Labels are 0-10; 11 ("Unlabelled") becomes 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.data import IGNORE_INDEX
from utils.data.files import SegmentationFiles

CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol",
           "fence", "car", "pedestrian", "bicyclist")  # fmt: skip
NUM_CLASSES = len(CLASSES)
SPLITS = ("train", "val", "test")
# The SegNet tutorial's colours, in class order; Unlabelled (255) is black.
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[:NUM_CLASSES] = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
    (0, 128, 192),
]  # fmt: skip
LUT = np.full(256, IGNORE_INDEX, np.uint8)
LUT[:NUM_CLASSES] = np.arange(NUM_CLASSES)


class CamVid(SegmentationFiles):
    """One split of CamVid: ``train``, ``val`` or ``test``."""

    def __init__(self, root, split: str = "train", transform=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        base = Path(root) / "CamVid"
        if not (base / split).is_dir():
            raise FileNotFoundError(f"{base / split} does not exist; prepare CamVid "
                                    "with python -m data_scripts.camvid --root DIR")
        images = sorted((base / split).glob("*.png"))
        pairs = [(p, base / f"{split}annot" / p.name) for p in images]
        super().__init__(pairs, LUT, transform, CLASSES)
        self.split = split
