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
- ``"panoptic"``: ``int64 [H, W, 2]`` (category index into
  :data:`PANOPTIC_CATEGORIES`, COCO panoptic 2017's 133 categories in id
  order: 0..79 the things, 80..132 the stuff; instance id 1.. for things, 0
  for stuff); void and crowd are (255, 0). The panoptic json's categories
  must be among these 133 (same id, name and isthing); each PNG must have its
  image's size and hold only the ids of its ``segments_info`` (and 0, void).

Deviations from COCO's panoptic evaluation (``panopticapi``): crowd regions
are void, so :class:`utils.metrics.PanopticQuality` leaves them out of a
prediction's IoU and FP test whatever their category, where panopticapi
counts a crowd's pixels in the union and excuses only predictions of the
crowd's own category.
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
# The 53 stuff categories of COCO panoptic 2017: (COCO category id, name).
STUFF_CATEGORIES = (
    (92, "banner"), (93, "blanket"), (95, "bridge"), (100, "cardboard"),
    (107, "counter"), (109, "curtain"), (112, "door-stuff"), (118, "floor-wood"),
    (119, "flower"), (122, "fruit"), (125, "gravel"), (128, "house"),
    (130, "light"), (133, "mirror-stuff"), (138, "net"), (141, "pillow"),
    (144, "platform"), (145, "playingfield"), (147, "railroad"), (148, "river"),
    (149, "road"), (151, "roof"), (154, "sand"), (155, "sea"), (156, "shelf"),
    (159, "snow"), (161, "stairs"), (166, "tent"), (168, "towel"),
    (171, "wall-brick"), (175, "wall-stone"), (176, "wall-tile"),
    (177, "wall-wood"), (178, "water-other"), (180, "window-blind"),
    (181, "window-other"), (184, "tree-merged"), (185, "fence-merged"),
    (186, "ceiling-merged"), (187, "sky-other-merged"), (188, "cabinet-merged"),
    (189, "table-merged"), (190, "floor-other-merged"), (191, "pavement-merged"),
    (192, "mountain-merged"), (193, "grass-merged"), (194, "dirt-merged"),
    (195, "paper-merged"), (196, "food-other-merged"),
    (197, "building-other-merged"), (198, "rock-merged"),
    (199, "wall-other-merged"), (200, "rug-merged"),
)  # fmt: skip
CLASSES = ("background",) + tuple(name for _, name in CATEGORIES)
NUM_CLASSES = len(CLASSES)  # 81
# COCO category id -> label (1..80); ids are not contiguous (12, 26, ... unused)
CATEGORY_TO_LABEL = {cat: k + 1 for k, (cat, _) in enumerate(CATEGORIES)}
# COCO has no official palette for semantic maps; VOC's colour map is used.
PALETTE = voc_palette(256)
# COCO panoptic 2017's 133 categories in the order of their ids (that of
# panoptic_{split}2017.json and of detectron2): (COCO id, name, isthing). The
# panoptic targets' category ids are indices into this tuple.
PANOPTIC_CATEGORIES = (tuple((cat, name, True) for cat, name in CATEGORIES)
                       + tuple((cat, name, False) for cat, name in STUFF_CATEGORIES))
PANOPTIC_CLASSES = tuple(name for _, name, _ in PANOPTIC_CATEGORIES)
PANOPTIC_THING_IDS = tuple(range(len(CATEGORIES)))  # 0..79; 80..132 are stuff
# COCO category id -> index into PANOPTIC_CATEGORIES
PANOPTIC_INDEX = {cat: k for k, (cat, _, _) in enumerate(PANOPTIC_CATEGORIES)}
# Panoptic maps: category k in VOC's colour k + 1 (none black), void white
# as in Shapes' palette (COCO's own panoptic colours are not used).
PANOPTIC_PALETTE = np.roll(voc_palette(256), -1, axis=0)
PANOPTIC_PALETTE[IGNORE_INDEX] = (255, 255, 255)
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
        path = self.files.get(key)  # prepared without --panoptic: no entry
        if path is None or not path.is_file():
            where = path or Path(root) / "prepared.json"
            what = ("has no panoptic annotations" if path is None
                    else "does not exist")
            raise FileNotFoundError(
                f"{where} {what}; prepare COCO with python -m data_scripts.coco "
                f"--root {root}" + (" --panoptic" if key == "panoptic" else ""))
        data = json.loads(path.read_text())
        wanted = ("images", "annotations") + (("categories",) if key == "panoptic"
                                              else ())
        if not isinstance(data, dict) or not all(
                isinstance(data.get(k), list) for k in wanted):
            raise ValueError(f"{path} is not a COCO {key} file (it needs the "
                             f"lists {', '.join(wanted)})")
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.annotations = defaultdict(list)
        for ann in data["annotations"]:
            self.annotations[ann["image_id"]].append(ann)
        if task == "panoptic":
            self.classes = PANOPTIC_CLASSES
            self.category_index = panoptic_category_index(data["categories"], path)
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
        path = self.files["panoptic_masks"] / ann["file_name"]
        with Image.open(path) as png:
            if png.size != (w, h):
                raise ValueError(f"{path} is {png.size[0]} x {png.size[1]} pixels, "
                                 f"its image {info['file_name']} {w} x {h}")
            ids = rgb_to_id(np.asarray(png.convert("RGB")))
        segments = {seg["id"] for seg in ann["segments_info"]}
        # One pass over the pixels: the ids present, each pixel's index in them.
        present, where = np.unique(ids, return_inverse=True)
        unknown = [int(i) for i in present if i != 0 and i not in segments]
        if unknown:
            raise ValueError(f"{path} has segment ids {unknown[:5]} that its "
                             f"segments_info does not list (it lists "
                             f"{sorted(segments)[:10]})")
        value, instance = {}, 0  # segment id -> (category, instance id)
        for seg in ann["segments_info"]:  # things numbered in this order
            category = self.category_index.get(seg["category_id"])
            if category is None:
                raise ValueError(f"{path}: segment {seg['id']} has category_id "
                                 f"{seg['category_id']}, which is not among the "
                                 f"categories of {self.files['panoptic']}")
            if seg.get("iscrowd", 0):
                continue  # a crowd stays void
            thing = category in PANOPTIC_THING_IDS
            instance += thing
            value[seg["id"]] = (category, instance if thing else 0)
        pairs = np.array([value.get(int(i), (IGNORE_INDEX, 0)) for i in present],
                         np.int64).reshape(-1, 2)
        return torch.from_numpy(pairs[where.reshape(h, w)])


def panoptic_category_index(categories, path) -> dict:
    """COCO category id -> index into :data:`PANOPTIC_CATEGORIES`, for the
    ``categories`` of a panoptic json; ``ValueError`` unless each is one of
    COCO panoptic 2017's (same id, name and isthing)."""
    index = {}
    for cat in categories:
        k = PANOPTIC_INDEX.get(cat.get("id"))
        if k is None or PANOPTIC_CATEGORIES[k][1:] != (cat.get("name"),
                                                        bool(cat.get("isthing"))):
            raise ValueError(
                f"{path}: category {json.dumps(cat)[:120]} is not one of COCO "
                "panoptic 2017's 133 (id, name, isthing): utils.data.coco."
                "PANOPTIC_CATEGORIES")
        index[cat["id"]] = k
    return index
