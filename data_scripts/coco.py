"""COCO 2017: instance (and panoptic) annotations and images, or a subset.

    python -m data_scripts.coco --root data/coco [--subset N] [--panoptic]
                                [--splits train val] [--mirror URL]

Downloads annotations_trainval2017.zip (241 MB) and the image zips
train2017.zip (18 GB) and val2017.zip (778 MB). With ``--subset N`` it keeps
the first N annotated images of each split (by id), writes their own
annotation files and downloads just those images one by one into
``{split}2017_subset/``. ``--panoptic`` adds
panoptic_annotations_trainval2017.zip (821 MB) and its PNGs.
cocodataset.org publishes no checksums: zip members are checked by their
CRC-32 on extraction, single images by decoding them whole at the size their
annotation gives (a truncated JPEG fails), and the SHA-256 of every file
accepted is recorded so that a later run notices damage.

Read the result with :class:`utils.data.coco.COCO` (instance, semantic or
panoptic targets) or ``--data coco`` (the model's task: semantic maps of 81
classes, instances, or, prepared with ``--panoptic``, panoptic maps of 133
categories).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.parse
from collections import Counter
from functools import partial
from pathlib import Path

from data_scripts import common, sources
from data_scripts.download import apply_mirror, download
from utils.data import coco


def subset(data: dict, n: int) -> dict:
    """The first ``n`` images (by id) that have annotations, with theirs."""
    annotated = {a["image_id"] for a in data["annotations"]}
    images = sorted((im for im in data["images"] if im["id"] in annotated),
                    key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in images}
    return {**{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": images,
            "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}


# COCO's own image names: digits, ".jpg"; nothing that could name a path
IMAGE_NAME = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z_.-]{0,199}")
MAX_IMAGE_BYTES = 64 << 20  # COCO's largest JPEG is under 1 MB


def check_image(path, width: int, height: int) -> None:
    """Raise ``ValueError`` (or PIL's ``OSError``) unless ``path`` is an image of
    ``width`` x ``height`` that decodes to its last pixel. ``Image.verify()``
    alone passes a truncated JPEG; ``load()`` decodes it all."""
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone allowed gray padding
        raise ValueError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; unset it")
    with Image.open(path) as img:
        if img.size != (width, height):  # checked before decoding anything
            raise ValueError(f"it is {img.size[0]} x {img.size[1]} pixels, the "
                             f"annotations say {width} x {height}")
        img.load()


def checked_images(data: dict, path) -> list[dict]:
    """The ``images`` of an annotation file, each with a safe file name and a
    size; ``ValueError`` naming the first that is not."""
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not isinstance(data.get("annotations"),
                                                      list):
        raise ValueError(f"{path} is not a COCO annotation file (no images and "
                         "annotations lists)")
    for im in images:
        name = im.get("file_name") if isinstance(im, dict) else None
        if not (isinstance(name, str) and IMAGE_NAME.fullmatch(name)
                and isinstance(im.get("id"), int)
                and all(isinstance(im.get(k), int) and im[k] > 0
                        for k in ("width", "height"))):
            raise ValueError(f"{path}: image entry {str(im)[:200]} needs an integer "
                             "id, width and height and a plain file_name")
    return images


def fetch_images(images, split: str, dest: Path, args) -> None:
    """Download single images of a ``--subset``, each checked by decoding it
    whole at the size its annotation gives, before it is kept."""
    for k, im in enumerate(images):
        path = dest / im["file_name"]
        if path.exists():  # from an earlier run, maybe one that checked less
            try:
                check_image(path, im["width"], im["height"])
                continue
            except (ValueError, OSError) as err:
                print(f"{path} is damaged ({err}): downloading it again")
                path.unlink()
        url = apply_mirror(sources.COCO_IMAGE_URL.format(
            split=f"{split}2017", file_name=urllib.parse.quote(im["file_name"])),
            args.mirror)
        download(url, path, progress=False, max_bytes=MAX_IMAGE_BYTES,
                 verify=partial(check_image, width=im["width"], height=im["height"]))
        if (k + 1) % 100 == 0 or k + 1 == len(images):
            print(f"  {split}: {k + 1}/{len(images)} images")


def prepare_split(args, split: str, panoptic: bool) -> dict:
    root = args.root
    files = {"instances": f"annotations/instances_{split}2017.json",
             "images": f"{split}2017"}
    if panoptic:
        files["panoptic"] = f"panoptic_annotations/panoptic_{split}2017.json"
        files["panoptic_masks"] = f"panoptic_{split}2017"
        common.extract_part(args, root / "panoptic_annotations" /
                            f"panoptic_{split}2017.zip", f"panoptic_{split}2017",
                            root / f"panoptic_{split}2017")
    if args.subset is None:
        common.extract_part(args, f"coco_{split}2017", f"{split}2017",
                            root / f"{split}2017")
        return files
    path = root / files["instances"]
    data = json.loads(path.read_text())
    checked_images(data, path)
    data = subset(data, args.subset)
    # A folder of its own, so that a later full run can still extract the zip.
    files["images"] = f"{split}2017_subset"
    files["instances"] = f"annotations/instances_{split}2017_subset{args.subset}.json"
    common.write_json(root / files["instances"], data)
    if panoptic:
        pan = json.loads((root / files["panoptic"]).read_text())
        keep = {im["id"] for im in data["images"]}
        pan["images"] = [im for im in pan["images"] if im["id"] in keep]
        pan["annotations"] = [a for a in pan["annotations"] if a["image_id"] in keep]
        files["panoptic"] = (f"panoptic_annotations/panoptic_{split}2017_"
                             f"subset{args.subset}.json")
        common.write_json(root / files["panoptic"], pan)
    common.output(args, root / files["images"], refetch=True)
    fetch_images(data["images"], split, root / files["images"], args)
    return files


def main(argv=None):
    p = common.parser("coco", __doc__)
    p.add_argument("--subset", type=int, metavar="N",
                   help="only the first N annotated images of each split")
    p.add_argument("--panoptic", action="store_true",
                   help="also the panoptic annotations and PNGs")
    p.add_argument("--splits", nargs="+", default=list(coco.SPLITS),
                   choices=coco.SPLITS, help="splits to prepare (default: both)")
    args = p.parse_args(argv)
    if args.subset is not None and args.subset < 1:
        p.error("--subset must be at least 1")
    options = {"subset": args.subset, "panoptic": args.panoptic,
               "splits": sorted(args.splits)}
    if common.already_prepared(args, **options):
        return
    root = common.make_root(args)
    common.extract_part(args, "coco_annotations", "annotations",
                        root / "annotations")
    if args.panoptic:
        common.extract_part(args, "coco_panoptic", "annotations",
                            root / "panoptic_annotations")
    files = {s: prepare_split(args, s, args.panoptic) for s in sorted(args.splits)}
    splits, counts = {}, Counter()
    for split, f in files.items():
        data = json.loads((root / f["instances"]).read_text())
        splits[split] = len(data["images"])
        missing = [im["file_name"] for im in data["images"]
                   if not (root / f["images"] / im["file_name"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} {split} images are missing, "
                                    f"e.g. {missing[0]}")
        if split == min(files):
            first = split
            counts.update(a["category_id"] for a in data["annotations"]
                          if not a.get("iscrowd", 0))
    common.finish(args, {
        "dataset": "coco", "options": options, "splits": splits, "files": files,
        "class_counts_of": f"{first} instances of each category",
        "class_counts": {name: counts[cat] for cat, name in coco.CATEGORIES},
    })


if __name__ == "__main__":
    sys.exit(common.run(main))
