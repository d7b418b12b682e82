"""Mask pasting (utils.models.detection.masks) on hand-made cases and against a
naive per-pixel bilinear resize."""

import math

import torch

from utils.models.detection import expand_boxes, paste_masks_in_image


def naive_resize(mask, h, w):
    """Bilinear resize with align_corners=False, one output pixel at a time:
    source = (target + 0.5) * in / out - 0.5, clamped at 0, neighbours clamped
    at the last pixel."""
    M_h, M_w = mask.shape
    out = torch.zeros(h, w, dtype=mask.dtype)
    for i in range(h):
        sy = max((i + 0.5) * M_h / h - 0.5, 0.0)
        y0 = int(math.floor(sy))
        y1, ly = min(y0 + 1, M_h - 1), sy - y0
        for j in range(w):
            sx = max((j + 0.5) * M_w / w - 0.5, 0.0)
            x0 = int(math.floor(sx))
            x1, lx = min(x0 + 1, M_w - 1), sx - x0
            out[i, j] = ((1 - ly) * ((1 - lx) * mask[y0, x0] + lx * mask[y0, x1])
                         + ly * ((1 - lx) * mask[y1, x0] + lx * mask[y1, x1]))
    return out


def test_constant_mask_fills_its_inclusive_integer_box():
    """padding=0: box (2, 3, 5, 7) covers columns 2..5 and rows 3..7."""
    masks = torch.full((1, 1, 4, 4), 0.75)
    out = paste_masks_in_image(masks, torch.tensor([[2.0, 3.0, 5.0, 7.0]]), (10, 8),
                               padding=0)
    expected = torch.zeros(1, 1, 10, 8)
    expected[0, 0, 3:8, 2:6] = 0.75
    assert torch.equal(out, expected)


def test_padding_grows_the_box_and_fades_the_border():
    """M = 2 with padding 1 is a 4 x 4 mask, the box grown by 4 / 2 = 2 about its
    centre: (2, 2, 5, 5) -> (0.5, 0.5, 6.5, 6.5) -> int (0, 0, 6, 6), 7 x 7."""
    assert expand_boxes(torch.tensor([[2.0, 2.0, 5.0, 5.0]]), 2.0).tolist() == \
        [[0.5, 0.5, 6.5, 6.5]]
    masks = torch.ones(1, 1, 2, 2)
    out = paste_masks_in_image(masks, torch.tensor([[2.0, 2.0, 5.0, 5.0]]), (9, 9))
    padded = torch.zeros(4, 4)
    padded[1:3, 1:3] = 1
    expected = torch.zeros(9, 9)
    expected[0:7, 0:7] = naive_resize(padded, 7, 7)
    assert torch.allclose(out[0, 0], expected, atol=1e-6)
    assert out[0, 0, 3, 3] == 1 and out[0, 0, 0, 0] == 0 and out[0, 0, 7:].sum() == 0


def test_random_masks_against_naive_resize_and_clipping():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 1, 6, 6, generator=g)
    boxes = torch.tensor([[3.2, 4.7, 15.9, 11.0], [-4.0, -2.5, 6.0, 9.0],
                          [14.0, 10.0, 30.0, 25.0]])  # the last two cross the border
    out = paste_masks_in_image(masks, boxes, (16, 20))
    assert out.shape == (3, 1, 16, 20)
    padded = torch.nn.functional.pad(masks, (1, 1, 1, 1))
    for k, box in enumerate(expand_boxes(boxes, 8 / 6).to(torch.int64).tolist()):
        x1, y1, x2, y2 = box
        full = naive_resize(padded[k, 0], y2 - y1 + 1, x2 - x1 + 1)
        expected = torch.zeros(16 + 40, 20 + 40)  # room for the border crossings
        expected[y1 + 20:y2 + 21, x1 + 20:x2 + 21] = full
        assert torch.allclose(out[k, 0], expected[20:36, 20:40], atol=1e-6), k


def test_no_masks():
    out = paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (5, 7))
    assert out.shape == (0, 1, 5, 7)


def test_box_outside_the_image_pastes_nothing():
    box = torch.tensor([[30.0, 30.0, 40.0, 40.0]])
    out = paste_masks_in_image(torch.ones(1, 1, 4, 4), box, (10, 10))
    assert out.sum() == 0
