"""RoIPool (utils.models.detection.roi_pool) against a naive loop written from
the definition, and hand-computed cases: C rounding, empty bins, argmax ties."""

import importlib
import math

import pytest
import torch

from utils.models.detection import RoIPool, roi_pool
from utils.models.detection.roi_pool import round_half_away


def c_round(v):
    """C's round: halves away from zero."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def naive_roi_pool(input, rois, output_size, spatial_scale=1.0):
    """RoIPool one RoI and one bin at a time (Python numbers)."""
    PH, PW = output_size
    _, C, H, W = input.shape
    out = torch.zeros(len(rois), C, PH, PW, dtype=input.dtype)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (c_round(v * spatial_scale) for v in (x1, y1, x2, y2))
        width, height = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        for ph in range(PH):
            h0 = min(max(math.floor(ph * height / PH) + y1, 0), H)
            h1 = min(max(math.ceil((ph + 1) * height / PH) + y1, 0), H)
            for pw in range(PW):
                w0 = min(max(math.floor(pw * width / PW) + x1, 0), W)
                w1 = min(max(math.ceil((pw + 1) * width / PW) + x1, 0), W)
                if h1 > h0 and w1 > w0:
                    out[k, :, ph, pw] = input[int(b), :, h0:h1, w0:w1].amax(dim=(1, 2))
    return out


def test_round_half_away_from_zero():
    x = torch.tensor([2.5, -2.5, 0.5, -0.5, 1.49999, 0.49999997, 3.0, -1.7])
    assert round_half_away(x).tolist() == [3.0, -3.0, 1.0, -1.0, 1.0, 0.0, 3.0, -2.0]


@pytest.mark.parametrize("seed", range(4))
def test_roi_pool_matches_naive_loop(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 11, 13, generator=g, dtype=torch.float64)
    xy = torch.rand(12, 2, generator=g, dtype=torch.float64) * 30 - 4
    wh = torch.rand(12, 2, generator=g, dtype=torch.float64) * 20
    batch = torch.randint(0, 2, (12, 1), generator=g).double()
    rois = torch.cat([batch, xy, xy + wh], 1)
    rois[:4, 1:] = torch.round(rois[:4, 1:] * 2) / 2  # halves: the rounding matters
    rois[4, 1:] = torch.tensor([30.0, 30.0, 40.0, 40.0])  # wholly outside: bins of 0
    rois[5, 1:] = torch.tensor([6.0, 6.0, 2.0, 2.0])  # inverted: forced to 1 x 1
    for scale, size in ((1.0, (3, 3)), (0.5, (2, 5)), (0.25, (7, 7))):
        assert torch.equal(roi_pool(x, rois, size, scale),
                           naive_roi_pool(x, rois, size, scale)), (scale, size)


def test_halves_round_away_from_zero_not_to_even():
    """x1 = x2 = 2.5 rounds to 3 (C's round), not 2 (torch.round)."""
    f = torch.arange(16.0).view(1, 1, 4, 4)
    out = roi_pool(f, torch.tensor([[0.0, 2.5, 0.0, 2.5, 0.0]]), 1)
    assert out.item() == f[0, 0, 0, 3]


def test_box_is_inclusive_of_its_end_pixel():
    """(0, 0, 1, 1) covers pixels 0 and 1 (size x2 - x1 + 1 = 2), so 2 x 2 bins
    are single pixels."""
    f = torch.arange(16.0).view(1, 1, 4, 4)
    out = roi_pool(f, torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]), 2)
    assert torch.equal(out[0, 0], f[0, 0, :2, :2])


def test_gradient_goes_to_the_first_maximum_in_row_major_order():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 0, 2, 0] = 5.0  # three tied maxima
    x.requires_grad_()
    roi_pool(x, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]), 1).sum().backward()
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1, 1] = 1.0
    assert torch.equal(x.grad, expected)


def test_empty_bins_are_zero_without_gradient():
    x = (torch.randn(1, 2, 4, 4) - 10).requires_grad_()  # all values negative
    out = roi_pool(x, torch.tensor([[0.0, 10.0, 10.0, 12.0, 12.0]]), 2)
    assert torch.equal(out, torch.zeros(1, 2, 2, 2))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, 0.0, 0.0, 5.0, 4.0], [1.0, 1.3, 2.0, 6.2, 5.9],
                         [1.0, -3.0, -1.0, 2.0, 2.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (2, 3), 1.0), (x,))


def test_many_rois_of_mixed_sizes_in_chunks(monkeypatch):
    """A small gather budget forces several chunks; results are unchanged."""
    # The package's __init__ exports the function under the module's name.
    module = importlib.import_module("utils.models.detection.roi_pool")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 20, 20, generator=g)
    xy = torch.rand(30, 2, generator=g) * 15
    wh = torch.rand(30, 2, generator=g) * 15
    rois = torch.cat([torch.zeros(30, 1), xy, xy + wh], 1)
    whole = roi_pool(x, rois, 3)
    monkeypatch.setattr(module, "MAX_GATHERED", 3 * 3 * 4 * 8)
    assert torch.equal(roi_pool(x, rois, 3), whole)
    assert torch.equal(whole, naive_roi_pool(x, rois, (3, 3)))


def test_module_and_empty_input():
    x = torch.randn(1, 2, 5, 5)
    rois = torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0]])
    assert torch.equal(RoIPool(2, 1.0)(x, rois), roi_pool(x, rois, 2, 1.0))
    assert roi_pool(x, torch.zeros(0, 5), (2, 3)).shape == (0, 2, 2, 3)
