import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.data import shapes
from utils.data.cells import Cells, CellsConfig
from utils.data.shapes import Shapes, ShapesConfig


def test_semantic_contract():
    ds = Shapes("train", 20, ShapesConfig(image_size=48))
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 48, 48)
        assert 0 <= image.min() and image.max() <= 1
        assert target.dtype == torch.int64 and target.shape == (48, 48)
        values = set(target.unique().tolist())
        assert values <= set(range(shapes.NUM_CLASSES)) | {255}


def test_all_targets_are_consistent():
    ds = Shapes("val", 30, ShapesConfig(image_size=64, max_objects=8), task="all")
    for i in range(len(ds)):
        _, t = ds[i]
        n = len(t["labels"])
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["masks"].shape == (n, 64, 64) and t["masks"].dtype == torch.uint8
        assert t["panoptic"].shape == (64, 64, 2)
        assert set(t["labels"].tolist()) <= set(shapes.THING_IDS)
        masks = t["masks"].bool()
        assert not (masks.sum(0) > 1).any(), "instances overlap"
        for k, (mask, label, box) in enumerate(zip(masks, t["labels"], t["boxes"])):
            assert mask.sum() >= ds.config.min_visible
            assert (t["semantic"][mask] == label).all()
            assert (t["panoptic"][..., 1][mask] == k + 1).all()
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        stuff = t["panoptic"][..., 1] == 0
        assert set(t["panoptic"][..., 0][stuff].unique().tolist()) <= (
            set(shapes.STUFF_IDS) | {255}
        )
        # void pixels: ignore in semantic, void in panoptic, in no instance
        void = t["semantic"] == 255
        assert (t["panoptic"][..., 0][void] == 255).all()
        assert not masks[:, void].any()


def test_deterministic_per_seed_split_index():
    a = Shapes("train", 5, seed=1, task="all")
    b = Shapes("train", 5, seed=1, task="all")
    assert torch.equal(a[3][0], b[3][0])
    assert torch.equal(a[3][1]["masks"], b[3][1]["masks"])
    assert not torch.equal(a[3][0], Shapes("val", 5, seed=1)[3][0])
    assert not torch.equal(a[3][0], Shapes("train", 5, seed=2)[3][0])
    assert torch.equal(a[-1][0], a[4][0])


def test_ignore_border_marks_edges_only_in_semantic():
    cfg = ShapesConfig(image_size=64, ignore_border=2, min_objects=3)
    _, t = Shapes("train", 3, cfg, task="all")[0]
    band = (t["semantic"] == 255) & (t["panoptic"][..., 0] != 255)
    assert band.any()
    edge = torch.zeros_like(band)
    ids = t["panoptic"][..., 1]
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    assert (band | ~edge).all(), "every instance edge pixel is in the band"


def test_difficulty_changes_sizes():
    def mean_area(difficulty):
        ds = Shapes(
            "train",
            40,
            ShapesConfig(image_size=64, difficulty=difficulty),
            task="instance",
        )
        return np.mean(
            [
                ds[i][1]["masks"].sum().item() / max(1, len(ds[i][1]["labels"]))
                for i in range(len(ds))
            ]
        )

    assert mean_area(1.0) < mean_area(0.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=8), "image_size"),
        (dict(min_objects=5, max_objects=2), "min_objects"),
        (dict(difficulty=1.5), "difficulty"),
        (dict(noise=-1), "noise"),
        (dict(touch_prob=2), "touch_prob"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesConfig(**kwargs)


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="split"):
        Shapes("training")
    with pytest.raises(ValueError, match="task"):
        Shapes("train", task="detection")
    with pytest.raises(ValueError, match="length"):
        Shapes("train", -3)
    with pytest.raises(IndexError, match="out of range"):
        Shapes("train", 3)[3]


SPEED_PROBE = """
import time, torch
torch.set_num_threads(1)
from utils.data.shapes import Shapes, ShapesConfig
ds = Shapes("train", 10_000, ShapesConfig(image_size=128))
ds[0]
best = 0.0
for start in range(0, 1500, 300):  # best of five: robust to a busy moment
    t0 = time.thread_time()
    for i in range(start, start + 300):
        ds[i]
    best = max(best, 300 / (time.thread_time() - t0))
print(best)
"""


def test_generation_speed_at_least_1000_per_second_on_one_core():
    # CPU time of one thread: what one core spends, whatever else the machine
    # runs at the same time (wall time would measure the neighbours too). In a
    # fresh interpreter: after the rest of the suite, the test process itself
    # measured 920 where a fresh one measures 1,240-1,470 on the same machine.
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", SPEED_PROBE], env=env, cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    best = float(out.stdout.split()[-1])
    assert best >= 1000, f"Shapes generates {best:.0f} images/s at 128x128"


def test_cells_touch_and_separate():
    ds = Cells("train", 10, CellsConfig(image_size=64), task="all")
    touching = 0
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert set(t["semantic"].unique().tolist()) <= {0, 1, 255}
        assert (t["labels"] == 1).all()
        ids = t["panoptic"][..., 1]
        touching += int(
            ((ids[:, 1:] != ids[:, :-1]) & (ids[:, 1:] > 0) & (ids[:, :-1] > 0)).sum()
        )
        masks = t["masks"].bool()
        assert torch.equal(masks.any(0), t["semantic"] == 1)
    assert touching > 0, "no two cells touch: the variant lost its point"
    with pytest.raises(ValueError, match="min_cells"):
        CellsConfig(min_cells=0)


def test_budget_splits_are_the_budgets_sizes_and_differ():
    from utils.budgets import budget

    b = budget("03_fcn", "ci")
    train, val = shapes.budget_splits(b)
    assert (len(train), len(val)) == (b.train_size, b.val_size)
    image, _ = train[0]
    assert image.shape[-2:] == (b.image_size, b.image_size)
    assert not torch.equal(image, val[0][0])
