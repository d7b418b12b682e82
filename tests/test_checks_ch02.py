"""Chapter 02's checks pass independent correct answers (written here, not the
course's copies), refuse the course's own code, and name plausible mistakes."""

import torch
import torch.nn.functional as F
from check_helpers import fails, passes
from torch import nn

from utils.checks import ch02
from utils.models import patch_cnn

P, HALF = 27, 13


def sliding_window_loop(classify, images, pad=HALF):
    B, C, H, W = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows, cols = padded.shape[-2] - P + 1, padded.shape[-1] - P + 1
    windows = [padded[b, :, y:y + P, x:x + P]
               for b in range(B) for y in range(rows) for x in range(cols)]
    scores = classify(torch.stack(windows))  # (B*H*W, K)
    return scores.reshape(B, H, W, -1).permute(0, 3, 1, 2)


def shift_and_stitch_loop(conv_net, images, swap=False, down=False):
    """16 passes, each written pixel by pixel into the result; ``swap`` and
    ``down`` are two plausible mistakes (rows and columns exchanged; the image
    moved down and right instead of up and left)."""
    B, C, H, W = images.shape
    padded = F.pad(images, (HALF + 4, HALF + 4, HALF + 4, HALF + 4))
    out = torch.zeros(B, 4, H, W)
    for dy in range(4):
        for dx in range(4):
            top, left = (4 - dy, 4 - dx) if down else (4 + dy, 4 + dx)
            scores = conv_net(padded[:, :, top:, left:])
            for i in range(scores.shape[-2]):
                for j in range(scores.shape[-1]):
                    y, x = 4 * i + dy, 4 * j + dx
                    if swap:
                        y, x = 4 * i + dx, 4 * j + dy
                    if y < H and x < W:
                        out[:, :, y, x] = scores[:, :, i, j]
    return out


def sliding_window_untransposed(classify, images):
    B, C, H, W = images.shape
    columns = F.unfold(F.pad(images, (HALF,) * 4), P)  # (B, C*P*P, H*W)
    scores = classify(columns.reshape(-1, C, P, P))  # the columns mixed up
    return scores.view(B, H, W, -1).permute(0, 3, 1, 2)


def fc_to_conv_own(linear, in_channels, kernel_size, swap=False, bias=True):
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size)
    weight = linear.weight.reshape(conv.weight.shape)
    with torch.no_grad():
        conv.weight.copy_(weight.transpose(2, 3) if swap else weight)
        conv.bias.copy_(linear.bias if bias else torch.zeros_like(conv.bias))
    return conv


def test_the_checks_pass_independent_answers(capsys):
    passes(capsys, (ch02.check_sliding_window, sliding_window_loop),
           (ch02.check_fc_to_conv, fc_to_conv_own),
           (ch02.check_shift_and_stitch, shift_and_stitch_loop))


def test_the_checks_refuse_the_course_s_own_code():
    fails(ch02.check_sliding_window, patch_cnn.sliding_window,
          "patch_cnn.sliding_window")
    fails(ch02.check_fc_to_conv, patch_cnn.linear_to_conv, "linear_to_conv")
    fails(ch02.check_shift_and_stitch, patch_cnn.shift_and_stitch,
          "patch_cnn.shift_and_stitch")


def test_the_checks_name_plausible_mistakes():
    fails(ch02.check_sliding_window, sliding_window_untransposed,
          "each column of F.unfold")
    fails(ch02.check_sliding_window,  # windows off by one pixel
          lambda c, im: sliding_window_loop(c, F.pad(im, (1, 0))[..., :-1]),
          "values differ")
    # Padded by 14 instead of 13: 13x9 windows per 11x7 image.
    fails(ch02.check_sliding_window, lambda c, im: sliding_window_loop(c, im, 14),
          "windows per image", "14 pixels of padding", "13x9")
    fails(ch02.check_shift_and_stitch,
          lambda n, im: shift_and_stitch_loop(n, im, swap=True), "swapped")
    fails(ch02.check_shift_and_stitch,
          lambda n, im: shift_and_stitch_loop(n, im, down=True), "down and right")
    fails(ch02.check_fc_to_conv, lambda *a: fc_to_conv_own(*a, swap=True),
          "rows and columns")
    fails(ch02.check_fc_to_conv, lambda *a: fc_to_conv_own(*a, bias=False),
          "the bias")
    fails(ch02.check_fc_to_conv, lambda lin, c, k: nn.Linear(c * k * k, 7),
          "wrong type", "nn.Conv2d")
