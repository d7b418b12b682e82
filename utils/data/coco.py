"""COCO 2017 instances (and panoptic), as prepared by ``python -m data_scripts.coco``.

Layout under ``DIR``: ``annotations/instances_{split}2017.json`` (or the
``--subset`` copy that ``prepared.json`` names), ``{split}2017/*.jpg`` and,
with ``--panoptic``, ``panoptic_annotations/panoptic_{split}2017.json`` and
``panoptic_{split}2017/*.png``. Polygons and RLE are decoded in NumPy
(:mod:`utils.data.formats`) the way pycocotools decodes them.

Targets, per ``task`` (the contract of :mod:`utils.data.shapes`):

- ``"instance"``: ``boxes float32 [N, 4]`` (x1, y1, x2, y2 enclosing the mask,
  x2 exclusive), ``labels int64 [N]`` in 1..80 (:data:`CLASSES`), ``masks uint8
  [N, H, W]``; crowd regions are left out;
- ``"semantic"``: ``int64 [H, W]``, 0 = background, 1..80 the things, crowd
  regions 255 (later annotations paint over earlier ones);
- ``"panoptic"``: ``int64 [H, W, 2]`` (category index into the panoptic
  json's 133 categories, instance id 1.. for things, 0 for stuff); void and
  crowd are (255, 0).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from utils.data import IGNORE_INDEX
from utils.data.files import read_image
from utils.data.formats import (
    polygon_to_mask,
    rgb_to_id,
    rle_decode,
    rle_from_string,
    voc_palette,
)
from utils.data.targets import boxes_from_masks

# The 80 thing categories: (COCO category id, official name).
CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"),
    (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"),
    (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"),
    (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"),
    (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"),
    (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"),
    (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip
CLASSES = ("background",) + tuple(name for _, name in CATEGORIES)
NUM_CLASSES = len(CLASSES)  # 81
# COCO category id -> label (1..80); ids are not contiguous (12, 26, ... unused)
CATEGORY_TO_LABEL = {cat: k + 1 for k, (cat, _) in enumerate(CATEGORIES)}
# COCO has no official palette for semantic maps; VOC's colour map is used.
PALETTE = voc_palette(256)
SPLITS = ("train", "val")
TASKS = ("instance", "semantic", "panoptic")


def annotation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """One annotation's ``segmentation`` (polygons, RLE or compressed RLE) to a
    ``uint8 [height, width]`` mask, as pycocotools' ``annToMask``."""
    if isinstance(segmentation, list):
        if segmentation and len(segmentation[0]) == 4:
            # pycocotools' frPyObjects means 4 numbers as a box [x, y, w, h]
            # (and then raises a TypeError on a list); rasterised as its frBbox
            boxes = []
            for x, y, w, h in segmentation:
                boxes.append([x, y, x, y + h, x + w, y + h, x + w, y])
            segmentation = boxes
        return polygon_to_mask(segmentation, height, width)
    counts = segmentation["counts"]
    h, w = segmentation.get("size", (height, width))
    if (h, w) != (height, width):
        raise ValueError(f"RLE of size {h}x{w} on a {height}x{width} image")
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    return rle_decode(counts, height, width)


def split_files(root, split: str) -> dict:
    """Where a split's files are: from ``prepared.json``, else COCO's own names."""
    root = Path(root)
    manifest = root / "prepared.json"
    if manifest.is_file():
        files = json.loads(manifest.read_text()).get("files", {})
        if split in files:
            return {k: root / v for k, v in files[split].items()}
    return {"instances": root / "annotations" / f"instances_{split}2017.json",
            "images": root / f"{split}2017",
            "panoptic": root / "panoptic_annotations" / f"panoptic_{split}2017.json",
            "panoptic_masks": root / f"panoptic_{split}2017"}


class COCO(torch.utils.data.Dataset):
    """One split of COCO 2017 (``train`` or ``val``) for one ``task``."""

    def __init__(self, root, split: str = "val", task: str = "instance",
                 transform=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.files, self.split, self.task = split_files(root, split), split, task
        self.transform = transform
        key = "panoptic" if task == "panoptic" else "instances"
        if not self.files[key].is_file():
            raise FileNotFoundError(
                f"{self.files[key]} does not exist; prepare COCO with python -m "
                "data_scripts.coco --root DIR" + (" --panoptic" if key == "panoptic"
                                                  else ""))
        data = json.loads(self.files[key].read_text())
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.annotations = defaultdict(list)
        for ann in data["annotations"]:
            self.annotations[ann["image_id"]].append(ann)
        if task == "panoptic":
            cats = sorted(data["categories"], key=lambda c: c["id"])
            self.classes = tuple(c["name"] for c in cats)
            self.category_index = {c["id"]: k for k, c in enumerate(cats)}
            self.is_thing = {c["id"]: bool(c["isthing"]) for c in cats}
        else:
            self.classes = CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        info = self.images[index]
        image = read_image(self.files["images"] / info["file_name"])
        h, w = info["height"], info["width"]
        if tuple(image.shape[1:]) != (h, w):
            raise ValueError(f"{info['file_name']} is {list(image.shape[1:])}, the "
                             f"annotations say {[h, w]}")
        anns = self.annotations.get(info["id"], [])
        if self.task == "panoptic":
            target = self._panoptic(info, anns[0] if anns else None, h, w)
        else:
            target = self._instances(anns, h, w)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def _instances(self, anns, h, w):
        masks, labels, crowd = [], [], np.zeros((h, w), bool)
        for ann in anns:
            mask = annotation_to_mask(ann["segmentation"], h, w)
            if ann.get("iscrowd", 0):
                crowd |= mask.astype(bool)
            elif mask.any():
                masks.append(mask)
                labels.append(CATEGORY_TO_LABEL[ann["category_id"]])
        masks = np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)
        if self.task == "semantic":
            semantic = np.where(crowd, IGNORE_INDEX, 0).astype(np.int64)
            for mask, label in zip(masks, labels):
                semantic[mask.astype(bool)] = label
            return torch.from_numpy(semantic)
        return {"boxes": boxes_from_masks(masks),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "masks": torch.from_numpy(masks)}

    def _panoptic(self, info, ann, h, w):
        from PIL import Image

        out = np.zeros((h, w, 2), np.int64)
        out[..., 0] = IGNORE_INDEX
        if ann is None:
            return torch.from_numpy(out)
        with Image.open(self.files["panoptic_masks"] / ann["file_name"]) as png:
            ids = rgb_to_id(np.asarray(png.convert("RGB")))
        instance = 0
        for seg in ann["segments_info"]:
            where = ids == seg["id"]
            if seg.get("iscrowd", 0):
                continue  # stays void
            thing = self.is_thing[seg["category_id"]]
            instance += thing
            out[where, 0] = self.category_index[seg["category_id"]]
            out[where, 1] = instance if thing else 0
        return torch.from_numpy(out)
