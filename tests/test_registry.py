import pytest
import torch

from utils.data.registry import DATASETS, build_dataset, pad_collate


def test_shapes_is_registered_and_follows_the_contract():
    ds = build_dataset("shapes", "val", image_size=40, length=3)
    image, target = ds[0]
    assert len(ds) == 3
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32
    assert target.shape == (40, 40) and target.dtype == torch.int64
    spec = DATASETS["shapes"]
    assert spec.palette.shape == (256, 3) and len(spec.classes) == 8


def test_unknown_dataset_names_the_choices():
    with pytest.raises(KeyError, match="unknown dataset 'kitti'.*shapes"):
        build_dataset("kitti", "train")


def test_pad_collate_pads_with_zero_and_ignore():
    a = (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.long))
    b = (torch.ones(3, 4, 1), torch.ones(4, 1, dtype=torch.long))
    images, targets = pad_collate([a, b])
    assert images.shape == (2, 3, 4, 3) and targets.shape == (2, 4, 3)
    assert (images[0, :, 2:] == 0).all() and (targets[0, 2:] == 255).all()
    assert (targets[1, :, 1:] == 255).all() and (targets[1, :, :1] == 1).all()
