"""Checks for chapter 02 (patch classification).

Each compares the learner's function with the course's own implementation in
:mod:`utils.models.patch_cnn` on fixed inputs and refuses that implementation
as an answer (see :mod:`utils.checks.common`). The chapter's ``PatchCNN`` is
given code, pinned to the canonical one by an ungraded cell
(:func:`utils.checks.common.assert_same_model`). The stand-ins for a trained
patch CNN are one random linear map of the 27x27 window, applied window by
window (``classify``) or as a 27x27 convolution with stride 4 over the padded
image (the convolutionalised network), so every pixel of a window matters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.checks.common import (
    assert_close,
    exercise,
    fail,
    learner,
    ok,
    reshape_sizes,
)
from utils.models import patch_cnn

P = patch_cnn.PATCH_SIZE


def _window_weights(num_classes: int = 4):
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(3 * P * P, num_classes, generator=g) / P
    bias = torch.randn(num_classes, generator=g)
    return weight, bias


def _window_classifier(num_classes: int = 4):
    """A stand-in for a trained patch CNN: a fixed random linear map of the
    whole window, so every one of its 27x27 pixels matters."""
    weight, bias = _window_weights(num_classes)

    def classify(windows: torch.Tensor) -> torch.Tensor:
        if windows.shape[1:] != (3, P, P):
            raise ValueError(f"classify takes windows [N, 3, {P}, {P}], got "
                             f"{list(windows.shape)}")
        return windows.flatten(1) @ weight + bias  # (N, K)

    return classify


@exercise(
    forbid=[patch_cnn.sliding_window, patch_cnn.shift_and_stitch,
            patch_cnn.PatchCNN.forward, patch_cnn.PatchCNN.window_scores],
    hints=[
        "a pixel's window is the 27x27 square centred on it; past the image's "
        "border the square is filled with zeros",
        "F.unfold cuts every window of a (padded) image at once, one column per "
        "output position in row-major order: turn those columns into a batch of "
        "windows for classify, and its scores back into maps",
    ],
)
def check_sliding_window(sliding_window) -> None:
    """``sliding_window(classify, images)`` scores the window of every pixel."""
    classify = _window_classifier()
    images = torch.rand(2, 3, 11, 7, generator=torch.Generator().manual_seed(1))
    what = "sliding_window on two 11x7 images"
    with torch.no_grad():
        got = learner(sliding_window, classify, images.clone(), what=what,
                      diagnose=lambda err: _padding_hint(reshape_sizes(err), 11, 7))
        expected = patch_cnn.sliding_window(classify, images)
    hint = None
    if isinstance(got, torch.Tensor) and got.shape != expected.shape:
        hint = _padding_hint(([], got.numel()), 11, 7)
    elif isinstance(got, torch.Tensor):
        padded = F.pad(images, (P // 2,) * 4)
        columns = F.unfold(padded, P)  # (B, 3*27*27, H*W)
        untransposed = classify(columns.reshape(-1, 3, P, P)).view(2, 11, 7, -1)
        if torch.allclose(got, untransposed.permute(0, 3, 1, 2), atol=1e-5):
            hint = "each column of F.unfold's output is one window: bring the " \
                   "windows to the front before reshaping"
    assert_close(got, expected, what, hint=hint, atol=1e-5)
    ok("sliding_window gives the score of the window centred on every pixel")


def _padding_hint(sizes, H: int, W: int, B: int = 2, K: int = 4) -> str | None:
    """What a number of scores other than B*K*H*W says about the padding of a
    sliding window: (H + 2a) x (W + 2a) windows per image for a padding of
    13 + a pixels per side."""
    if sizes is None or sizes[1] % (B * K):
        return None
    per_image = sizes[1] // (B * K)
    for extra in range(-(min(H, W) // 2), P + 1):
        if extra and (H + 2 * extra) * (W + 2 * extra) == per_image:
            return (f"{per_image} windows per image, not {H}x{W} = {H * W}: with "
                    f"{P // 2 + extra} pixels of padding per side a {H}x{W} image "
                    f"has {H + 2 * extra}x{W + 2 * extra} windows; a 27-pixel "
                    f"window centred on a pixel reaches {P // 2} pixels past it")
    return None


@exercise(
    forbid=[patch_cnn.linear_to_conv],
    hints=[
        "a Linear layer on a flattened C x k x k window computes what a k x k "
        "convolution with out_features filters computes at one position: the "
        "same numbers, arranged as filters",
        "flatten() orders a window's numbers by channel, then row, then column, "
        "which is the layout of a convolution's filters; copy the weight and "
        "the bias without tracking gradients",
    ],
)
def check_fc_to_conv(fc_to_conv) -> None:
    """``fc_to_conv(linear, in_channels, kernel_size)`` -> equivalent Conv2d."""
    torch.manual_seed(3)
    linear = nn.Linear(5 * 3 * 3, 7)
    what = "fc_to_conv(Linear(45, 7), 5, 3)"
    conv = learner(fc_to_conv, linear, 5, 3, what=what)
    if not isinstance(conv, nn.Conv2d):
        fail(f"{what}: wrong type", "an nn.Conv2d", type(conv).__name__)
    if conv.weight.shape != (7, 5, 3, 3):
        fail(f"{what}: wrong weight shape", [7, 5, 3, 3], list(conv.weight.shape),
             hint="out_features filters of in_channels x kernel_size x kernel_size")
    expected = patch_cnn.linear_to_conv(linear, 5, 3)
    x = torch.randn(2, 5, 6, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = learner(conv, x, what=f"the Conv2d of {what}")
        hint = None
        if torch.allclose(conv.weight, expected.weight.transpose(2, 3)):
            hint = "rows and columns of the filters are swapped"
        elif conv.bias is None or not torch.allclose(conv.bias, linear.bias):
            hint = "the bias is not the Linear layer's"
        assert_close(got, expected(x), f"{what} on a [2, 5, 6, 8] map", hint=hint,
                     atol=1e-5)
    ok("fc_to_conv turns the Linear layer into a Conv2d with the same scores")


def _stride4_net(num_classes: int = 4):
    """The stand-in classifier convolutionalised: one 27x27 convolution with
    stride 4 over a padded image, so output (i, j) scores the window whose
    top-left corner is (4 i, 4 j)."""
    weight, bias = _window_weights(num_classes)
    kernel = weight.T.reshape(num_classes, 3, P, P)

    def conv_net(padded: torch.Tensor) -> torch.Tensor:
        return F.conv2d(padded, kernel, bias, stride=patch_cnn.STRIDE)

    return conv_net


def _stitched(conv_net, images, swap=False, sign=1) -> torch.Tensor:
    """Shift-and-stitch with one of the usual mistakes: ``swap`` exchanges the
    rows and columns a shift fills; ``sign=-1`` shifts the image down and
    right (padding at the top left) instead of up and left."""
    s, half = patch_cnn.STRIDE, P // 2
    B, C, H, W = images.shape
    padded = F.pad(images, (half + s, half + s, half + s, half + s))
    out = torch.zeros(B, 4, H, W)
    for dy in range(s):
        for dx in range(s):
            top, left = s + sign * dy, s + sign * dx
            scores = conv_net(padded[:, :, top:, left:])
            ry, rx = (dx, dy) if swap else (dy, dx)
            rows, cols = out[:, :, ry::s, rx::s].shape[-2:]
            out[:, :, ry::s, rx::s] = scores[:, :, :rows, :cols]
    return out


@exercise(
    forbid=[patch_cnn.shift_and_stitch, patch_cnn.sliding_window,
            patch_cnn.PatchCNN.forward],
    hints=[
        "one pass scores the pixels 0, 4, 8, ... in each direction; cutting dy "
        "rows off the top of the padded image makes the same pass score the "
        "pixels dy, dy + 4, dy + 8, ...",
        "each of the 16 shifts (dy, dx) fills the pixels whose row leaves "
        "remainder dy and whose column leaves remainder dx when divided by 4; "
        "pad as for the sliding window, then shift the padded image",
        "write each pass's scores into every fourth row, starting at row dy, "
        "and every fourth column, starting at column dx, of a [B, K, H, W] "
        "result",
    ],
)
def check_shift_and_stitch(shift_and_stitch) -> None:
    """``shift_and_stitch(conv_net, images)`` gives the sliding window's
    scores at every pixel from 16 stride-4 passes."""
    conv_net = _stride4_net()
    classify = _window_classifier()
    for size in ((11, 7), (16, 13)):
        images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
        what = f"shift_and_stitch on two {size[0]}x{size[1]} images"
        with torch.no_grad():
            got = learner(shift_and_stitch, conv_net, images.clone(), what=what,
                          diagnose=_stitch_diagnosis)
            expected = patch_cnn.sliding_window(classify, images)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            with torch.no_grad():
                if torch.allclose(got, _stitched(conv_net, images, swap=True),
                                  atol=1e-4) and size[0] != size[1]:
                    hint = "the shift (dy, dx) fills rows dy, dy + 4, ... and " \
                           "columns dx, dx + 4, ...: rows and columns are swapped"
                elif torch.allclose(got, _stitched(conv_net, images, sign=-1),
                                    atol=1e-4):
                    hint = "the image moved down and right: cut dy rows off the " \
                           "top instead (the window that started at row 4i now " \
                           "starts at 4i + dy of the original)"
        assert_close(got, expected, what, hint=hint, atol=1e-4)
    ok("shift_and_stitch gives the sliding window's score at every pixel")


def _stitch_diagnosis(err) -> str | None:
    if "expanded size of the tensor" in str(err) or "must match the existing " \
            "size" in str(err):
        return ("a pass gives another number of positions than the pixels it "
                "fills (rows dy, dy + 4, ..., columns dx, dx + 4, ...): pad by "
                "half a window on every side, as the sliding window does, and "
                "shift by cutting rows and columns off the top and left")
    return None
