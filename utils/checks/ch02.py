"""Checks for chapter 02 (patch classification).

Each compares the learner's function with the course's own implementation in
:mod:`utils.models.patch_cnn` on fixed inputs and refuses that implementation
as an answer (see :mod:`utils.checks.common`). The chapter's ``PatchCNN`` is
given code, pinned to the canonical one by an ungraded cell
(:func:`utils.checks.common.assert_same_model`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.checks.common import assert_close, exercise, fail, learner, ok
from utils.models import patch_cnn

P = patch_cnn.PATCH_SIZE


def _window_classifier(num_classes: int = 4):
    """A stand-in for a trained patch CNN: a fixed random linear map of the
    whole window, so every one of its 27x27 pixels matters."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(3 * P * P, num_classes, generator=g) / P
    bias = torch.randn(num_classes, generator=g)

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
        got = learner(sliding_window, classify, images.clone(), what=what)
        expected = patch_cnn.sliding_window(classify, images)
    hint = None
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        padded = F.pad(images, (P // 2,) * 4)
        columns = F.unfold(padded, P)  # (B, 3*27*27, H*W)
        untransposed = classify(columns.reshape(-1, 3, P, P)).view(2, 11, 7, -1)
        if torch.allclose(got, untransposed.permute(0, 3, 1, 2), atol=1e-5):
            hint = "each column of F.unfold's output is one window: bring the " \
                   "windows to the front before reshaping"
    assert_close(got, expected, what, hint=hint, atol=1e-5)
    ok("sliding_window gives the score of the window centred on every pixel")


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
