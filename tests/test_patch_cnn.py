"""The patch CNN (chapter 02): sliding window, convolutionalisation,
shift-and-stitch, the FC -> conv conversion and the FLOP counter."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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


def hand_count(model, x):
    """FLOPs by the per-layer rule (2 per multiply-accumulate), from hooks on
    the modules: Conv2d ``2 * out.numel() * C_in/groups * kh * kw``,
    ConvTranspose2d ``2 * in.numel() * C_out/groups * kh * kw``, Linear
    ``2 * out.numel() * in_features``."""
    total = 0

    def hook(module, args, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            per_input = module.out_channels // module.groups * kh * kw
            total += 2 * args[0].numel() * per_input
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("make, size", [
    (lambda: FCN8s(4, width=0.0625), (1, 3, 64, 96)),
    (lambda: nn.Sequential(nn.Conv2d(3, 6, 3, groups=3, padding=1),
                           nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1),
                           nn.Flatten(), nn.Linear(4 * 10 * 12, 7)), (2, 3, 5, 6)),
])
def test_count_flops_follows_the_per_layer_rule(make, size):
    model = make().eval()
    x = torch.rand(size)
    assert count_flops(model, x) == hand_count(model, x)


class WindowScores(nn.Module):
    """The convolutionalised PatchCNN on a whole image, without padding."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.window_scores(x)


def test_count_flops_sees_functional_calls():
    """The dense PatchCNN applies fc1 and fc2 with F.conv2d: module hooks miss
    them, torch's counter (and so count_flops) does not."""
    net = PatchCNN(4, width=0.5).eval()
    model = WindowScores(net)
    x = torch.rand(1, 3, 40, 40)
    c1, c2 = net.features.conv1, net.features.conv2
    h1 = 40 - 4 + 1  # conv1, 4x4 valid
    h2 = (h1 // 2) - 5 + 1  # pool, conv2 5x5 valid
    convs = 2 * (c1.out_channels * h1 * h1 * 3 * 16
                 + c2.out_channels * h2 * h2 * c1.out_channels * 25)
    n = ((40 - PATCH_SIZE) // STRIDE + 1) ** 2  # windows the dense form scores
    fcs = 2 * n * (net.fc1.in_features * net.fc1.out_features
                   + net.fc2.in_features * net.fc2.out_features)
    assert hand_count(model, x) == convs  # hooks see only the conv-pool stack
    assert count_flops(model, x) == convs + fcs
