"""PASCAL VOC 2012 trainval, plus SBD converted to VOC-style labels (train_aug).

    python -m data_scripts.voc --root data/voc [--no-sbd] [--mirror URL]

Downloads VOCtrainval_11-May-2012.tar (1.9 GB) and SBD's benchmark.tgz
(1.4 GB), extracts them, converts SBD's ``cls/*.mat`` class maps to palette
PNGs and writes the standard ``train_aug`` list: SBD train + SBD val + VOC
train, minus VOC val = 10,582 images. Read the result with
:class:`utils.data.voc.VOCSegmentation` or ``--data voc``.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from data_scripts import common
from data_scripts.disk import remove_leftovers
from data_scripts.matlab import loadmat
from utils.data import voc
from utils.data.files import read_ids
from utils.data.formats import write_palette_png


def train_aug_ids(sbd_train, sbd_val, voc_train, voc_val) -> list[str]:
    """The standard augmented training list: every image with a label in SBD
    or VOC train, except VOC val (the benchmark's test set)."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def sbd_label(path) -> np.ndarray:
    """The class map ``uint8 [H, W]`` (0-20) of an SBD ``cls/<id>.mat`` file."""
    seg = loadmat(path)["GTcls"]["Segmentation"]
    if seg.ndim != 2 or seg.size and seg.max() > 20:
        raise ValueError(f"{path}: GTcls.Segmentation is not a 0-20 class map")
    return seg.astype(np.uint8)


def convert_train_aug(root, vocdir, sbd, ids) -> None:
    """Write ``SegmentationClassAug/<id>.png`` for every id, all or nothing.

    VOC's own label is used where it exists (it marks borders as 255); SBD's
    otherwise. Never from VOC val, which ``ids`` excludes.
    """
    dest = root / "SegmentationClassAug"
    if dest.exists():
        return
    staging = root / ".SegmentationClassAug.partial"
    remove_leftovers(root, staging.name)
    staging.mkdir()
    print(f"convert {len(ids)} SBD/VOC labels to SegmentationClassAug/")
    for i in ids:
        own = vocdir / "SegmentationClass" / f"{i}.png"
        if own.is_file():
            shutil.copyfile(own, staging / f"{i}.png")
        else:
            write_palette_png(staging / f"{i}.png", sbd_label(sbd / "cls" / f"{i}.mat"))
    os.replace(staging, dest)


def main(argv=None):
    p = common.parser("voc", __doc__)
    p.add_argument("--no-sbd", action="store_true",
                   help="skip SBD: VOC train (1,464 images) instead of train_aug")
    args = p.parse_args(argv)
    options = {"sbd": not args.no_sbd}
    if common.already_prepared(args, **options):
        return
    root = common.make_root(args)
    vocdir = common.extract_part(args, "voc2012", "VOCdevkit/VOC2012",
                                 root / "VOC2012")
    sets = vocdir / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_ids(sets / "train.txt"), read_ids(sets / "val.txt")
    splits = {"train": len(voc_train), "val": len(voc_val)}
    train_split = "train"
    if not args.no_sbd:
        sbd = common.extract_part(args, "sbd", "benchmark_RELEASE/dataset",
                                  root / "SBD")
        for unused in ("img", "inst"):  # SBD's images are in VOC2012/JPEGImages
            shutil.rmtree(sbd / unused, ignore_errors=True)
        ids = train_aug_ids(read_ids(sbd / "train.txt"), read_ids(sbd / "val.txt"),
                            voc_train, voc_val)
        missing = [i for i in ids if not (vocdir / "JPEGImages" / f"{i}.jpg").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} train_aug images are not in "
                                    f"{vocdir / 'JPEGImages'}, e.g. {missing[0]}")
        convert_train_aug(root, vocdir, sbd, ids)
        common.output(args, root / "SegmentationClassAug")
        common.output(args, root / "ImageSets")
        (root / "ImageSets").mkdir(exist_ok=True)
        tmp = root / "ImageSets" / "train_aug.txt.tmp"
        tmp.write_text("".join(f"{i}\n" for i in ids))
        os.replace(tmp, root / "ImageSets" / "train_aug.txt")
        splits["train_aug"] = len(ids)
        train_split = "train_aug"
    dataset = voc.VOCSegmentation(root, train_split)
    counts = common.class_counts([t for _, t in dataset.pairs],
                                 np.arange(256), voc.NUM_CLASSES)
    common.finish(args, {
        "dataset": "voc", "options": options, "splits": splits,
        "class_counts_of": f"{train_split} images containing each class",
        "class_counts": dict(zip(voc.CLASSES, counts)),
    })


if __name__ == "__main__":
    sys.exit(common.run(main))
