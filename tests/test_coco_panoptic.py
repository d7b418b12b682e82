"""COCO panoptic for ``--data coco`` (chapter 09): a hand-made panoptic PNG
with known pixels through the reader, the registry's transforms and Panoptic
FPN's target mapping; the conversion to instances against Shapes' own
instance targets; and bad files, each one clear error line.

The end-to-end runs (``data_scripts.coco --panoptic`` served from 127.0.0.1,
then ``python -m utils.train --model panoptic_fpn --data coco``) are in
``test_dataset_scripts.py``.
"""

import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fake_datasets as fake

from utils.data import coco, shapes
from utils.data.formats import id_to_rgb
from utils.data.registry import DATASETS, build_dataset
from utils.data.targets import instances_from_panoptic

H, W = 6, 8
# Segments of the hand-made image: id -> COCO category id, and its pixels.
SKY, PERSON, DOG, CROWD, PERSON2, GRASS = 700, 7, 8, 5, 9, 701


def segment_ids() -> np.ndarray:
    ids = np.zeros((H, W), np.int64)  # 0 = void (row 2, columns 3..7)
    ids[:2] = SKY
    ids[0:2, 0:3] = PERSON  # rows 0-1, columns 0-2
    ids[3:, :] = GRASS
    ids[3:6, 5:8] = DOG  # rows 3-5, columns 5-7
    ids[4:6, 0:2] = PERSON2  # rows 4-5, columns 0-1
    ids[2, 0:3] = CROWD  # a crowd of people, row 2, columns 0-2
    return ids


# The expected map, written by hand: the categories' places among COCO
# panoptic's 133 (person 0, dog 16, sky-other-merged 80 + 39, grass-merged
# 80 + 45) and the things numbered in segments_info's order, the crowd void.
WANT = np.zeros((H, W, 2), np.int64)
WANT[..., 0] = 255
WANT[:2] = (119, 0)
WANT[0:2, 0:3] = (0, 1)
WANT[3:, :] = (125, 0)
WANT[3:6, 5:8] = (16, 2)
WANT[4:6, 0:2] = (0, 3)

SEGMENTS_INFO = [
    {"id": SKY, "category_id": 187, "iscrowd": 0},
    {"id": PERSON, "category_id": 1, "iscrowd": 0},
    {"id": DOG, "category_id": 18, "iscrowd": 0},
    {"id": CROWD, "category_id": 1, "iscrowd": 1},
    {"id": PERSON2, "category_id": 1, "iscrowd": 0},
    {"id": GRASS, "category_id": 193, "iscrowd": 0},
]
CATEGORIES = [{"id": c, "name": n, "isthing": t, "supercategory": "x"}
              for c, n, t in [(1, "person", 1), (18, "dog", 1),
                              (187, "sky-other-merged", 0),
                              (193, "grass-merged", 0)]]


def write_coco(root: Path, ids=None, segments=None, categories=None,
               panoptic=True) -> Path:
    """A COCO folder in the official layout (no prepared.json), both splits
    the same one image; ``panoptic=False`` leaves out the panoptic files."""
    rng = np.random.default_rng(0)
    ids = segment_ids() if ids is None else ids
    image = {"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W}
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir(parents=True)
        (root / f"{split}2017" / image["file_name"]).write_bytes(fake.jpeg(rng, H, W))
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(
            json.dumps({"images": [image], "annotations": [], "categories": []}))
        if not panoptic:
            continue
        (root / f"panoptic_{split}2017").mkdir()
        (root / f"panoptic_{split}2017" / "000000000001.png").write_bytes(
            fake.rgb_png(id_to_rgb(ids)))
        (root / "panoptic_annotations").mkdir(exist_ok=True)
        (root / "panoptic_annotations" / f"panoptic_{split}2017.json").write_text(
            json.dumps({"images": [image],
                        "categories": CATEGORIES if categories is None
                        else None if categories == "none" else categories,
                        "annotations": [{"image_id": 1,
                                         "file_name": "000000000001.png",
                                         "segments_info": segments or SEGMENTS_INFO}]}))
    return root


def test_the_133_categories_are_coco_panoptic_2017_s():
    cats = coco.PANOPTIC_CATEGORIES
    assert len(cats) == 133 and sum(t for *_, t in cats) == 80
    ids = [c for c, *_ in cats]
    assert ids == sorted(ids) and len(set(ids)) == 133  # the json's (id) order
    assert ids[79:81] == [90, 92] and ids[-1] == 200
    assert coco.PANOPTIC_THING_IDS == tuple(range(80))
    # the things are the instance task's 80, in the same order: label k + 1
    assert [n for _, n, t in cats if t] == list(coco.CLASSES[1:])
    spec = DATASETS["coco"].for_task("panoptic")
    assert spec.classes == coco.PANOPTIC_CLASSES
    assert spec.stuff_ids == tuple(range(80, 133))
    assert spec.instance_classes == coco.CLASSES  # background + the 80 things
    assert DATASETS["coco"].for_task("instance") is DATASETS["coco"]
    palette = spec.palette
    assert palette.shape == (256, 3) and tuple(palette[255]) == (255, 255, 255)
    assert len({tuple(c) for c in palette[:133]}) == 133  # distinct colours


def test_hand_made_png_to_categories_instances_and_training_targets(tmp_path):
    root = write_coco(tmp_path / "coco")
    _, panoptic = coco.COCO(root, "val", "panoptic")[0]
    assert torch.equal(panoptic, torch.from_numpy(WANT))
    # the registry's validation sample at the image's own size: unchanged
    _, target = build_dataset("coco", "val", root, image_size=H, task="panoptic")[0]
    assert torch.equal(target["panoptic"], torch.from_numpy(WANT))
    assert torch.equal(target["semantic"], torch.from_numpy(WANT[..., 0]))
    assert target["labels"].tolist() == [1, 17, 1]  # person, dog, person
    assert target["boxes"].tolist() == [[0, 0, 3, 2], [5, 3, 8, 6], [0, 4, 2, 6]]
    for mask, inst in zip(target["masks"], (1, 2, 3)):
        assert mask.dtype == torch.uint8
        assert np.array_equal(mask.numpy(), (WANT[..., 1] == inst).astype(np.uint8))
    # Panoptic FPN's semantic branch: 0 = "a thing", 1 + k = the k-th stuff
    from utils.models.panoptic import PanopticFPN

    spec = DATASETS["coco"].for_task("panoptic")
    model = PanopticFPN(133, 0.0625, thing_ids=spec.thing_ids)
    assert model.detector.config.num_classes == 81  # background + 80 things
    branch = model.to_branch[target["semantic"]]
    want = np.full((H, W), 255)
    want[WANT[..., 1] > 0] = 0
    want[WANT[..., 0] == 119] = 1 + 39
    want[WANT[..., 0] == 125] = 1 + 45
    assert np.array_equal(branch.numpy(), want)
    assert model.from_branch[[40, 46]].tolist() == [119, 125]


def test_resize_and_flip_keep_masks_and_map_together(tmp_path):
    root = write_coco(tmp_path / "coco")
    # shorter side 6 -> 12: nearest neighbour doubles every pixel
    image, target = build_dataset("coco", "val", root, image_size=12,
                                  task="panoptic")[0]
    big = WANT.repeat(2, axis=0).repeat(2, axis=1)
    assert image.shape == (3, 12, 16)
    assert torch.equal(target["panoptic"], torch.from_numpy(big))
    assert target["boxes"].tolist() == [[0, 0, 6, 4], [10, 6, 16, 12], [0, 8, 4, 12]]
    train = build_dataset("coco", "train", root, image_size=12, train=True,
                          task="panoptic")
    flips = set()
    for seed in range(8):
        torch.manual_seed(seed)
        image, target = train[0]
        pan = target["panoptic"].numpy()
        flipped = np.array_equal(pan, big[:, ::-1])
        assert flipped or np.array_equal(pan, big)
        flips.add(flipped)
        for mask, label in zip(target["masks"], target["labels"]):
            inst = pan[..., 1][mask.bool().numpy()]
            assert len(set(inst.tolist())) == 1 and inst[0] > 0
            assert np.array_equal(mask.numpy(), pan[..., 1] == inst[0])
            assert set(pan[..., 0][mask.bool().numpy()].tolist()) == {
                int(label) - 1}
    assert flips == {True, False}


def test_instances_from_panoptic_agree_with_shapes_own_instances():
    data = shapes.Shapes("val", 6, shapes.ShapesConfig(image_size=48), task="all")
    for k in range(len(data)):
        _, t = data[k]
        got = instances_from_panoptic(t["panoptic"], shapes.THING_IDS)
        assert torch.equal(got["masks"], t["masks"])
        assert torch.equal(got["boxes"], t["boxes"])
        things = torch.tensor(shapes.THING_IDS)
        assert torch.equal(things[got["labels"] - 1], t["labels"])
    empty = torch.full((4, 5, 2), 255, dtype=torch.int64)
    got = instances_from_panoptic(empty, shapes.THING_IDS)
    assert got["masks"].shape == (0, 4, 5) and got["boxes"].shape == (0, 4)


def unknown_id():
    ids = segment_ids()
    ids[5, 7] = 12345
    return {"ids": ids}


BAD = {
    "segment id not in segments_info": (
        unknown_id, "has segment ids [12345] that its segments_info does not list"),
    "PNG of the wrong size": (
        lambda: {"ids": np.zeros((H, W + 1), np.int64)},
        f"is {W + 1} x {H} pixels, its image 000000000001.jpg {W} x {H}"),
    "segment category not in the categories": (
        lambda: {"segments": SEGMENTS_INFO[:-1] + [{"id": GRASS, "category_id": 44,
                                                    "iscrowd": 0}]},
        f"segment {GRASS} has category_id 44, which is not among the categories"),
    "category not one of the 133": (
        lambda: {"categories": CATEGORIES + [{"id": 91, "name": "hat",
                                              "isthing": 1}]},
        "is not one of COCO panoptic 2017's 133"),
    "category with the wrong isthing": (
        lambda: {"categories": CATEGORIES[:-1] + [{"id": 193,
                                                   "name": "grass-merged",
                                                   "isthing": 1}]},
        "is not one of COCO panoptic 2017's 133"),
    "panoptic json without categories": (
        lambda: {"categories": "none"},
        "panoptic_train2017.json is not a COCO panoptic file (it needs the lists "
        "images, annotations, categories)"),
    "prepared without --panoptic": (
        lambda: {"panoptic": False},
        "does not exist; prepare COCO with python -m data_scripts.coco --root"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_panoptic_files_are_one_clear_error_line(case, tmp_path, capsys):
    from utils.train.cli import main as train_main

    make, message = BAD[case]
    root = write_coco(tmp_path / "coco", **make())
    with redirect_stdout(io.StringIO()):
        code = train_main(["--model", "panoptic_fpn", "--data", "coco",
                           "--data-root", str(root), "--image-size", "16",
                           "--width", "0.0625", "--profile", "ci", "--epochs", "1",
                           "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and message in err, err
    if case == "prepared without --panoptic":
        assert err.rstrip().endswith("--panoptic"), err
