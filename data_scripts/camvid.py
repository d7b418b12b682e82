"""CamVid, the 11-class version with the SegNet tutorial's train/val/test split.

    python -m data_scripts.camvid --root data/camvid [--mirror URL]

Downloads the SegNet tutorial repository's archive (about 0.6 GB; GitHub
publishes no checksum, so the zip's CRC-32s and the extracted content are
checked instead), keeps its ``CamVid/`` folder and drops the rest. Read the
result with :class:`utils.data.camvid.CamVid` or ``--data camvid``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_scripts import common
from utils.data import camvid

EXPECTED = {"train": 367, "val": 101, "test": 233}  # the SegNet tutorial's split


def check(folder: Path) -> None:
    """Every split has images, and every image its label."""
    for split in camvid.SPLITS:
        images = sorted((folder / split).glob("*.png"))
        if not images:
            raise FileNotFoundError(f"the archive has no CamVid/{split}/*.png")
        missing = [p.name for p in images
                   if not (folder / f"{split}annot" / p.name).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} CamVid/{split} images have no "
                                    f"label in {split}annot/, e.g. {missing[0]}")


def main(argv=None):
    args = common.parser("camvid", __doc__).parse_args(argv)
    if common.already_prepared(args):
        return
    root = common.make_root(args)
    common.extract_part(args, "camvid", "*/CamVid", root / "CamVid", check)
    splits = {split: len(camvid.CamVid(root, split)) for split in camvid.SPLITS}
    if splits != EXPECTED:
        print(f"note: split sizes {splits} differ from the SegNet tutorial's "
              f"{EXPECTED}")
    train = camvid.CamVid(root, "train")
    counts = common.class_counts([t for _, t in train.pairs], camvid.LUT,
                                 camvid.NUM_CLASSES)
    common.finish(args, {
        "dataset": "camvid", "options": {}, "splits": splits,
        "class_counts_of": "train images containing each class",
        "class_counts": dict(zip(camvid.CLASSES, counts)),
    })


if __name__ == "__main__":
    sys.exit(common.run(main))
