import pytest
import torch

from utils.models import MODELS, build_model


@pytest.mark.parametrize("size", [(32, 32), (37, 45), (17, 64)])
def test_tiny_fcn_keeps_any_input_size(size):
    model = build_model("tiny_fcn", 5, width=0.25).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 5, *size)


def test_every_registered_model_builds_and_runs():
    for name in MODELS:
        model = build_model(name, 4, width=0.25).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64))
        assert out.shape == (1, 4, 64, 64), name


def test_unknown_model():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        build_model("nope", 3)
