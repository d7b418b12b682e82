"""Oxford-IIIT Pet with trimaps, as prepared by ``python -m data_scripts.pets``.

Layout under ``DIR``: ``images/<name>.jpg`` and ``annotations/`` (the official
tree: ``trimaps/<name>.png``, ``trainval.txt``, ``test.txt``). A trimap
stores 1 = pet, 2 = background, 3 = the uncertain boundary; the reader maps
them to 1 (pet), 0 (background) and 255 (ignore).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.data import IGNORE_INDEX
from utils.data.files import SegmentationFiles, read_ids

CLASSES = ("background", "pet")
NUM_CLASSES = len(CLASSES)
SPLITS = ("trainval", "test")  # the official 3,680 / 3,669 split
# No official palette: black background, VOC's first colour for the pet.
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[1] = (128, 0, 0)
PALETTE[IGNORE_INDEX] = (224, 224, 192)
TRIMAP_LUT = np.full(256, IGNORE_INDEX, np.uint8)
TRIMAP_LUT[1], TRIMAP_LUT[2] = 1, 0


class OxfordPets(SegmentationFiles):
    """One split of Oxford-IIIT Pet: ``trainval`` or ``test``."""

    def __init__(self, root, split: str = "trainval", transform=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        ids = read_ids(root / "annotations" / f"{split}.txt")
        pairs = [(root / "images" / f"{i}.jpg",
                  root / "annotations" / "trimaps" / f"{i}.png") for i in ids]
        super().__init__(pairs, TRIMAP_LUT, transform, CLASSES)
        self.split = split
