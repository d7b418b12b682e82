"""The patch CNN (chapter 02): sliding window, convolutionalisation,
shift-and-stitch, the FC -> conv conversion and the FLOP counter."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from utils.flops import count_flops
from utils.models import FCN8s, PatchCNN
from utils.models.patch_cnn import (
    PATCH_SIZE,
    STRIDE,
    linear_to_conv,
    shift_and_stitch,
    sliding_window,
)


def naive_sliding_window(model, image):
    """One window per pixel, cut out by indexing, classified one at a time."""
    half = PATCH_SIZE // 2
    C, H, W = image.shape
    padded = torch.zeros(C, H + 2 * half, W + 2 * half)
    padded[:, half:half + H, half:half + W] = image
    out = torch.zeros(model.fc2.out_features, H, W)
    for y in range(H):
        for x in range(W):
            window = padded[:, y:y + PATCH_SIZE, x:x + PATCH_SIZE]
            out[:, y, x] = model.classify(window[None])[0]
    return out


@pytest.fixture
def model():
    torch.manual_seed(0)
    return PatchCNN(5, width=0.25).eval()


def test_classify_contract(model):
    out = model.classify(torch.rand(3, 3, PATCH_SIZE, PATCH_SIZE))
    assert out.shape == (3, 5) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="27"):
        model.classify(torch.rand(3, 3, 28, 28))


def test_unfold_sliding_window_equals_naive_loop(model):
    image = torch.rand(2, 3, 9, 6)
    got = sliding_window(model.classify, image, chunk=7)
    with torch.no_grad():
        for b in range(2):
            torch.testing.assert_close(got[b], naive_sliding_window(model, image[b]),
                                       rtol=1e-5, atol=1e-6)


def test_window_scores_are_the_classifier_on_every_4th_window(model):
    image = torch.rand(1, 3, 45, 38)
    with torch.no_grad():
        dense = model.window_scores(image)
    h, w = (45 - PATCH_SIZE) // STRIDE + 1, (38 - PATCH_SIZE) // STRIDE + 1
    assert dense.shape == (1, 5, h, w)
    with torch.no_grad():
        for i in range(h):
            for j in range(w):
                window = image[:, :, STRIDE * i:STRIDE * i + PATCH_SIZE,
                               STRIDE * j:STRIDE * j + PATCH_SIZE]
                expected = model.classify(window)[0]
                assert (dense[0, :, i, j] - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("size", [(1, 1), (13, 30), (64, 64), (37, 50)])
def test_shift_and_stitch_equals_sliding_window(model, size):
    image = torch.rand(2, 3, *size)
    expected = sliding_window(model.classify, image)
    got = shift_and_stitch(model.window_scores, image)
    assert got.shape == expected.shape == (2, 5, *size)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("size", [(5, 9), (64, 64), (37, 50)])
def test_forward_is_exact_on_every_4th_pixel(model, size):
    image = torch.rand(2, 3, *size)
    with torch.no_grad():
        dense = model(image)
    exact = sliding_window(model.classify, image)
    assert dense.shape == (2, 5, *size)
    diff = dense[:, :, ::STRIDE, ::STRIDE] - exact[:, :, ::STRIDE, ::STRIDE]
    assert diff.abs().max() <= 1e-5
    # in between, it is the bilinear interpolation of those exact scores
    grid = exact[:, :, ::STRIDE, ::STRIDE]
    if min(grid.shape[-2:]) > 1:
        n_h, n_w = STRIDE * (grid.shape[-2] - 1) + 1, STRIDE * (grid.shape[-1] - 1) + 1
        between = F.interpolate(grid, size=(n_h, n_w), mode="bilinear",
                                align_corners=True)
        h, w = min(n_h, size[0]), min(n_w, size[1])
        torch.testing.assert_close(dense[..., :h, :w], between[..., :h, :w],
                                   rtol=1e-5, atol=1e-5)


def test_linear_to_conv_scores_every_window():
    torch.manual_seed(1)
    linear = nn.Linear(6 * 4 * 4, 10)
    conv = linear_to_conv(linear, 6, 4)
    x = torch.randn(2, 6, 7, 9)
    with torch.no_grad():
        out = conv(x)  # (2, 10, 4, 6)
        for i in range(4):
            for j in range(6):
                expected = linear(x[:, :, i:i + 4, j:j + 4].flatten(1))
                torch.testing.assert_close(out[:, :, i, j], expected)
    with pytest.raises(ValueError, match="96 inputs"):
        linear_to_conv(linear, 6, 3)


class Classifier(nn.Module):
    """The patch CNN's window classifier as a module of its own."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.classify(x)


def _reference_flops(model, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("make, size", [
    (lambda: Classifier(PatchCNN(4, width=0.5)), (2, 3, PATCH_SIZE, PATCH_SIZE)),
    (lambda: PatchCNN(4, width=0.5), (2, 3, 40, 40)),  # dense form: fc as F.conv2d
    (lambda: FCN8s(4, width=0.0625), (1, 3, 64, 96)),
    (lambda: nn.Sequential(nn.Conv2d(3, 6, 3, groups=3, padding=1),
                           nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1),
                           nn.Flatten(), nn.Linear(4 * 10 * 12, 7)), (2, 3, 5, 6)),
])
def test_count_flops_matches_torch_flop_counter(make, size):
    model = make().eval()
    x = torch.rand(size)
    got, expected = count_flops(model, x), _reference_flops(model, x)
    if isinstance(model, PatchCNN):
        # the dense form applies fc1/fc2 with F.conv2d, which hooks do not
        # see (the docstring says so): only the conv-pool stack is counted
        assert 0 < got < expected
    else:
        assert got == expected
