"""Checks for chapter 02 (patch classification): each compares the learner's
code with the canonical copy in :mod:`utils.models.patch_cnn` on fixed inputs."""

from __future__ import annotations

import torch
from torch import nn

from utils.checks.common import assert_close, call, ok
from utils.models import patch_cnn


def _reference_model(num_classes: int = 4) -> patch_cnn.PatchCNN:
    torch.manual_seed(2)
    return patch_cnn.PatchCNN(num_classes, width=0.25).eval()


def check_patch_cnn(PatchCNN) -> None:
    """The notebook's PatchCNN has the canonical layers and gives its scores."""
    ref = _reference_model()
    mine = PatchCNN(4, width=0.25).eval()
    try:
        mine.load_state_dict(ref.state_dict())
    except RuntimeError as err:
        raise AssertionError(
            "PatchCNN's layers differ from utils.models.PatchCNN's (names or "
            f"shapes): {err}. Hint: keep features.conv1/conv2, fc1 and fc2."
        ) from None
    x = torch.rand(6, 3, patch_cnn.PATCH_SIZE, patch_cnn.PATCH_SIZE,
                   generator=torch.Generator().manual_seed(0))
    hint = "conv-pool stack, flatten, fc1, ReLU, fc2"
    with torch.no_grad():
        got = call(mine.classify, x, what="PatchCNN.classify", hint=hint)
        assert_close(got, ref.classify(x), "PatchCNN.classify", hint, atol=1e-5)
    ok("PatchCNN matches utils.models.PatchCNN on the same weights")


def check_sliding_window(sliding_window) -> None:
    """``sliding_window(classify, images)`` scores the window of every pixel."""
    ref = _reference_model()
    images = torch.rand(2, 3, 11, 7, generator=torch.Generator().manual_seed(1))
    hint = ("pad by 13 on every side with zeros, F.unfold(padded, 27), then "
            "reshape the columns to [B*H*W, 3, 27, 27] (transpose first) and "
            "the scores back to [B, K, H, W]")
    what = "sliding_window on two 11x7 images"
    with torch.no_grad():
        got = call(sliding_window, ref.classify, images, what=what, hint=hint)
    expected = patch_cnn.sliding_window(ref.classify, images)
    assert_close(got, expected, what, hint, atol=1e-5)
    ok("sliding_window gives the score of the window centred on every pixel")


def check_fc_to_conv(fc_to_conv) -> None:
    """``fc_to_conv(linear, in_channels, kernel_size)`` -> equivalent Conv2d."""
    torch.manual_seed(3)
    linear = nn.Linear(5 * 3 * 3, 7)
    hint = ("the Linear weight [out, C*k*k] is the conv weight [out, C, k, k] in "
            "the order flatten() used; copy the bias as it is")
    what = "fc_to_conv(Linear(45, 7), 5, 3)"
    conv = call(fc_to_conv, linear, 5, 3, what=what, hint=hint)
    if not isinstance(conv, nn.Conv2d):
        raise AssertionError(f"fc_to_conv must return an nn.Conv2d, got "
                             f"{type(conv).__name__}. Hint: nn.Conv2d(in_channels, "
                             "linear.out_features, kernel_size)")
    expected = patch_cnn.linear_to_conv(linear, 5, 3)
    x = torch.randn(2, 5, 6, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_close(conv(x), expected(x), f"{what} on [2, 5, 6, 8]", hint,
                     atol=1e-5)
    ok("fc_to_conv turns the Linear layer into a Conv2d with the same scores")
