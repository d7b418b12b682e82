"""Cityscapes from your own zips: labelIds to the 19 trainIds (255 = ignore).

    python -m data_scripts.cityscapes --root data/cityscapes [--zips DIR]

Cityscapes cannot be downloaded without an account. Register at
https://www.cityscapes-dataset.com/register/, then download from
https://www.cityscapes-dataset.com/downloads/ the two packages

    leftImg8bit_trainvaltest.zip   (11 GB, packageID=3)
    gtFine_trainvaltest.zip        (241 MB, packageID=1)

and put them in ROOT (or in the folder given by --zips). The script checks
the zips' CRC-32s while extracting them and writes a
``*_gtFine_labelTrainIds.png`` next to every ``*_gtFine_labelIds.png``.
Read the result with :class:`utils.data.cityscapes.Cityscapes` or
``--data cityscapes``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from data_scripts import common
from utils.data import cityscapes
from utils.data.formats import cityscapes_lut, read_label_png

ZIPS = {"leftImg8bit": "leftImg8bit_trainvaltest.zip",
        "gtFine": "gtFine_trainvaltest.zip"}


def find_zips(folders, inners=tuple(ZIPS)) -> dict[str, Path]:
    """The zips of the folders ``inners`` (of :data:`ZIPS`), found in ``folders``."""
    found, missing = {}, []
    for inner in inners:
        name = ZIPS[inner]
        hits = [Path(f) / name for f in folders if (Path(f) / name).is_file()]
        if hits:
            found[inner] = hits[0]
        else:
            missing.append(name)
    if missing:
        where = " or ".join(str(f) for f in folders)
        raise FileNotFoundError(
            f"{', '.join(missing)} not found in {where}. Cityscapes needs an "
            "account: register at https://www.cityscapes-dataset.com/register/, "
            "download leftImg8bit_trainvaltest.zip (11 GB, packageID=3) and "
            "gtFine_trainvaltest.zip (241 MB, packageID=1) from "
            "https://www.cityscapes-dataset.com/downloads/, put them there (or "
            "pass --zips DIR) and run this command again."
        )
    return found


def convert_labels(root: Path) -> int:
    """Write the trainId PNGs that are missing (each whole or absent)."""
    from PIL import Image

    lut = cityscapes_lut()
    n = 0
    for src in sorted((root / "gtFine").glob(f"*/*/*{cityscapes.LABEL_IDS_SUFFIX}")):
        dest = src.with_name(src.name.replace(cityscapes.LABEL_IDS_SUFFIX,
                                              cityscapes.TRAIN_IDS_SUFFIX))
        if dest.exists():
            continue
        tmp = dest.with_name(dest.name + ".tmp")
        Image.fromarray(lut[read_label_png(src)], mode="L").save(tmp, format="PNG")
        os.replace(tmp, dest)
        n += 1
    return n


def main(argv=None):
    p = common.parser("cityscapes", __doc__)
    p.add_argument("--zips", type=Path, help="folder holding the two zips "
                   "(default: ROOT, then ROOT/downloads)")
    args = p.parse_args(argv)
    if common.already_prepared(args):
        return
    root = common.make_root(args)
    folders = [args.zips] if args.zips else [root, root / "downloads"]
    found = find_zips(folders, [i for i in ZIPS if not (root / i).exists()])
    for inner in ZIPS:  # a folder extracted before needs its zip no more
        common.extract_part(args, found.get(inner), inner, root / inner)
    print(f"converted {convert_labels(root)} labelIds maps to trainIds")
    splits = {s: len(cityscapes.Cityscapes(root, s)) for s in cityscapes.SPLITS}
    train = cityscapes.Cityscapes(root, "train")
    missing = [t for _, t in train.pairs if not t.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} train images have no label, e.g. "
                                f"{missing[0]}; is gtFine_trainvaltest.zip whole?")
    counts = common.class_counts([t for _, t in train.pairs], np.arange(256),
                                 cityscapes.NUM_CLASSES)
    common.finish(args, {
        "dataset": "cityscapes", "options": {}, "splits": splits,
        "class_counts_of": "train images containing each class",
        "class_counts": dict(zip(cityscapes.CLASSES, counts)),
    })


if __name__ == "__main__":
    sys.exit(common.run(main))
