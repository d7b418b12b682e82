import pytest
import torch

from utils.data import transforms as T
from utils.data.shapes import Shapes, ShapesConfig


def sample(task="all", size=40):
    return Shapes("train", 4, ShapesConfig(image_size=size, min_objects=3), task=task)[
        1
    ]


def test_flip_moves_image_and_every_target_together():
    image, target = sample()
    flipped_image, flipped = T.RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(flipped["semantic"], target["semantic"].flip(-1))
    assert torch.equal(flipped["panoptic"], target["panoptic"].flip(1))
    assert torch.equal(flipped["masks"], target["masks"].flip(-1))
    W = image.shape[-1]
    boxes = target["boxes"]
    assert torch.equal(flipped["boxes"][:, 0], W - boxes[:, 2])
    assert torch.equal(flipped["boxes"][:, 2], W - boxes[:, 0])
    same_image, same = T.RandomHorizontalFlip(p=0.0)(image, target)
    assert same_image is image and same is target


def test_resize_uses_nearest_for_labels():
    image, target = sample("semantic")
    img, lab = T.Resize((57, 23))(image, target)
    assert (
        img.shape == (3, 57, 23) and lab.shape == (57, 23) and lab.dtype == torch.int64
    )
    assert set(lab.unique().tolist()) <= set(target.unique().tolist())


def test_crop_pads_with_ignore_and_void():
    image, target = sample(size=32)
    img, t = T.RandomCrop(48)(image, target)
    assert img.shape == (3, 48, 48)
    assert (img[:, 32:, :] == 0).all() and (t["semantic"][32:, :] == 255).all()
    assert (t["panoptic"][32:, :, 0] == 255).all() and (
        t["panoptic"][32:, :, 1] == 0
    ).all()
    assert t["masks"].shape[1:] == (48, 48)
    assert torch.equal(t["semantic"][:32, :32], target["semantic"])


def test_crop_drops_instances_that_leave_and_recomputes_boxes():
    image, target = sample(size=64)
    top, left = 10, 20
    img, t = T.RandomCrop(24).crop(image, target, top, left)
    kept = target["masks"][:, top : top + 24, left : left + 24].flatten(1).bool().any(1)
    assert len(t["labels"]) == int(kept.sum())
    assert torch.equal(t["labels"], target["labels"][kept])
    for mask, box in zip(t["masks"].bool(), t["boxes"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_random_scale_and_compose_are_seeded():
    image, target = sample("semantic")
    pipeline = T.train_transform(32)
    torch.manual_seed(5)
    a = pipeline(image, target)
    torch.manual_seed(5)
    b = pipeline(image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 32, 32)


@pytest.mark.parametrize(
    "image, target, message",
    [
        (torch.rand(3, 8, 8).double(), torch.zeros(8, 8, dtype=torch.long), "float32"),
        (torch.rand(1, 8, 8), torch.zeros(8, 8, dtype=torch.long), r"\[3, H, W\]"),
        (torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.int32), "int64"),
        (torch.rand(3, 8, 8), torch.zeros(8, 9, dtype=torch.long), "size"),
        (torch.rand(3, 8, 8), torch.zeros(8, 8, 3, dtype=torch.long), "semantic"),
        (
            torch.rand(3, 8, 8),
            {
                "boxes": torch.zeros(1, 4),
                "labels": torch.zeros(1).long(),
                "masks": torch.zeros(1, 8, 8),
            },
            "uint8",
        ),
        (
            torch.rand(3, 8, 8),
            {
                "boxes": torch.zeros(2, 4),
                "labels": torch.zeros(1).long(),
                "masks": torch.zeros(1, 8, 8, dtype=torch.uint8),
            },
            "boxes",
        ),
        (torch.rand(3, 8, 8), {"labels": torch.zeros(1).long()}, "missing"),
    ],
)
def test_bad_input_is_named(image, target, message):
    with pytest.raises((ValueError, TypeError), match=message):
        T.RandomHorizontalFlip(1.0)(image, target)


def test_bad_parameters():
    with pytest.raises(ValueError):
        T.RandomHorizontalFlip(2.0)
    with pytest.raises(ValueError):
        T.RandomScale(2.0, 1.0)
    with pytest.raises(ValueError):
        T.RandomCrop(0)
