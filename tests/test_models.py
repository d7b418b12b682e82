import pytest
import torch

from utils.models import MODELS, build_model


@pytest.mark.parametrize("size", [(32, 32), (37, 45), (17, 64)])
def test_tiny_fcn_keeps_any_input_size(size):
    model = build_model("tiny_fcn", 5, width=0.25).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 5, *size)


def task_of(name):
    return getattr(MODELS[name], "task", "semantic")


def test_every_registered_model_builds_and_runs():
    semantic = [name for name in MODELS if task_of(name) == "semantic"]
    assert "tiny_fcn" in semantic
    for name in semantic:
        model = build_model(name, 4, width=0.25).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64))
        assert out.shape == (1, 4, 64, 64), name


def test_every_registered_instance_model_builds_and_detects():
    instance = [name for name in MODELS if task_of(name) == "instance"]
    assert "maskrcnn" in instance
    for name in instance:  # torchvision's contract: a list in, a list of dicts out
        model = build_model(name, 4, width=0.125, profile="ci", image_size=64).eval()
        with torch.no_grad():
            (out,) = model([torch.rand(3, 64, 80)])
        assert set(out) == {"boxes", "labels", "scores", "masks"}, name
        assert out["masks"].shape[1:] == (1, 64, 80), name
        assert out["masks"].dtype == torch.float32, name


def test_every_registered_panoptic_model_builds_and_segments():
    from utils.data import shapes
    panoptic = [name for name in MODELS if task_of(name) == "panoptic"]
    assert "panoptic_fpn" in panoptic
    for name in panoptic:  # a list in, per image a panoptic map [H, W, 2] out
        model = build_model(name, shapes.NUM_CLASSES, width=0.125, profile="ci",
                            image_size=64, thing_ids=shapes.THING_IDS).eval()
        with torch.no_grad():
            (out,) = model([torch.rand(3, 64, 80)])
        assert out["panoptic"].shape == (64, 80, 2), name
        assert out["panoptic"].dtype == torch.int64, name


def test_unknown_model():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        build_model("nope", 3)
