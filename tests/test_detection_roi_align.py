"""RoIAlign (utils.models.detection.roi_align) against a naive loop written
from the definition (per RoI, per bin, per sample), hand-computed cases and
gradcheck."""

import importlib
import math

import pytest
import torch

from utils.models.detection import RoIAlign, roi_align


def naive_bilinear(fmap, y, x):
    """Value of ``fmap [C, H, W]`` at ``(y, x)``: 0 outside [-1, H] x [-1, W];
    coordinates below 0 count as 0, those beyond the last pixel as the last."""
    _, H, W = fmap.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= H - 1:
        y0 = y1 = H - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= W - 1:
        x0 = x1 = W - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[:, y0, x0] + (1 - ly) * lx * fmap[:, y0, x1]
            + ly * (1 - lx) * fmap[:, y1, x0] + ly * lx * fmap[:, y1, x1])


def naive_roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                    aligned=False):
    """RoIAlign one RoI, one bin, one sample at a time, in Python floats."""
    PH, PW = output_size
    out = torch.zeros(len(rois), input.shape[1], PH, PW, dtype=input.dtype)
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        start_x, start_y = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        width = x2 * spatial_scale - offset - start_x
        height = y2 * spatial_scale - offset - start_y
        if not aligned:
            width, height = max(width, 1.0), max(height, 1.0)
        bin_h, bin_w = height / PH, width / PW
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(height / PH), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(width / PW), 0)
        for ph in range(PH):
            for pw in range(PW):
                total = torch.zeros(input.shape[1], dtype=input.dtype)
                for iy in range(gh):
                    y = start_y + ph * bin_h + (iy + 0.5) * bin_h / gh
                    for ix in range(gw):
                        x = start_x + pw * bin_w + (ix + 0.5) * bin_w / gw
                        total += naive_bilinear(input[int(b)], y, x)
                out[k, :, ph, pw] = total / max(gh * gw, 1)
    return out


def random_rois(k, n_images, H, W, g, dtype=torch.float64):
    xy = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([W, H]) * 1.2 - 2
    wh = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([W, H]) * 0.7
    batch = torch.randint(0, n_images, (k, 1), generator=g).to(dtype)
    return torch.cat([batch, xy, xy + wh], 1)


@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_matches_naive_loop(sampling_ratio, aligned):
    g = torch.Generator().manual_seed(sampling_ratio + 10 * aligned + 5)
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    rois = random_rois(8, 2, 9, 11, g)
    rois[0, 1:] = torch.tensor([2.0, 3.0, 6.0, 7.0], dtype=torch.float64)  # on pixels
    rois[1, 1:] = torch.tensor([4.0, 4.0, 4.0, 4.0], dtype=torch.float64)  # zero area
    rois[2, 1:] = torch.tensor([-9.0, -9.0, -3.0, -2.0], dtype=torch.float64)  # outside
    for scale in (1.0, 0.5):
        expected = naive_roi_align(x, rois, (3, 4), scale, sampling_ratio, aligned)
        got = roi_align(x, rois, (3, 4), scale, sampling_ratio, aligned)
        assert torch.allclose(got, expected, rtol=0, atol=1e-12), scale
    # float32 agrees to rounding
    got32 = roi_align(x.float(), rois.float(), (3, 4), 0.5, sampling_ratio, aligned)
    expected = naive_roi_align(x, rois.float().double(), (3, 4), 0.5, sampling_ratio,
                               aligned)
    assert torch.allclose(got32.double(), expected, rtol=0, atol=1e-5)


def linear_map():
    """f(y, x) = 4y + x on a 4 x 4 map: bilinear sampling reproduces it exactly."""
    return torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)


def test_aligned_box_on_pixel_boundaries_is_average_pooling():
    """aligned=True: the box (0, 0, 4, 4) covers pixels 0..3 exactly; 2 x 2 bins
    with 2 x 2 samples each land on pixel centres, so each bin is the mean of
    its 2 x 2 pixels."""
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = roi_align(linear_map(), rois, 2, 1.0, 2, aligned=True)
    assert out.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert torch.equal(out, torch.nn.functional.avg_pool2d(linear_map(), 2))


def test_legacy_alignment_is_shifted_by_half_a_pixel():
    """aligned=False: samples at 0.5 and 1.5 (not 0 and 1); in the last bins
    the sample at 3.5 is clamped to the last pixel, 3."""
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = roi_align(linear_map(), rois, 2, 1.0, 2, aligned=False)
    # bin (0, 0): mean y = 1, mean x = 1 -> 5; bin (0, 1): x in {2.5, 3} -> 2.75
    assert out.flatten().tolist() == [5.0, 4 + 2.75, 4 * 2.75 + 1, 4 * 2.75 + 2.75]


def test_samples_outside_the_map():
    f = linear_map() + 1  # nonzero everywhere
    one_sample = dict(output_size=1, spatial_scale=1.0, sampling_ratio=1)
    # sample at (-1.5, -1.5): outside [-1, H] -> 0
    box = torch.tensor([[0.0, -2.0, -2.0, -1.0, -1.0]])
    assert roi_align(f, box, **one_sample) == 0
    # sample at (-0.5, -0.5): inside [-1, H], clamped to pixel (0, 0)
    assert roi_align(f, torch.tensor([[0.0, -1.0, -1.0, 0.0, 0.0]]), **one_sample) == 1
    # sample at (4, 4) = (H, W): still inside, clamped to the last pixel
    assert roi_align(f, torch.tensor([[0.0, 3.5, 3.5, 4.5, 4.5]]), **one_sample) == 16
    # sample at (4.25, 4.25): beyond H -> 0
    box = torch.tensor([[0.0, 3.75, 3.75, 4.75, 4.75]])
    assert roi_align(f, box, **one_sample) == 0
    # Partly outside: x samples at -1.25 (outside: 0, but still counted in the
    # mean) and 0.25, y samples at 0.25 and 0.75: 4 samples, 2 of them 0.
    out = roi_align(f, torch.tensor([[0.0, -2.0, 0.0, 1.0, 1.0]]), 1, 1.0, 2)
    expected = (naive_bilinear(f[0], 0.25, 0.25) + naive_bilinear(f[0], 0.75, 0.25)) / 4
    assert torch.allclose(out.flatten(), expected)


def test_zero_area_boxes():
    f = linear_map()
    point = torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0]])
    # legacy: widened to 1 x 1, one adaptive sample at (2.5, 2.5)
    assert roi_align(f, point, 1, 1.0, -1, aligned=False).item() == 4 * 2.5 + 2.5
    # aligned, adaptive: ceil(0) = 0 samples -> 0
    assert roi_align(f, point, 1, 1.0, -1, aligned=True).item() == 0
    # aligned, fixed ratio: every sample at the point (1.5, 1.5)
    assert roi_align(f, point, 1, 1.0, 2, aligned=True).item() == 4 * 1.5 + 1.5


def test_adaptive_sampling_ratio_is_ceil_of_roi_over_output():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 16, 16, generator=g)
    # 10 x 7 pixels into 3 x 2 bins: ceil(10 / 3) = 4, ceil(7 / 2) = 4
    rois = torch.tensor([[0.0, 1.0, 2.0, 8.0, 12.0]])
    adaptive = roi_align(x, rois, (3, 2), 1.0, -1)
    assert torch.equal(adaptive, roi_align(x, rois, (3, 2), 1.0, 0))  # 0 is adaptive
    assert torch.allclose(adaptive, roi_align(x, rois, (3, 2), 1.0, 4), atol=1e-6)
    assert not torch.allclose(adaptive, roi_align(x, rois, (3, 2), 1.0, 2), atol=1e-3)
    # RoIs with different grids in one call (grouped by grid size)
    rois = torch.tensor([[0.0, 1.0, 2.0, 8.0, 12.0], [0.0, 0.0, 0.0, 2.0, 3.0],
                         [0.0, 3.0, 1.0, 15.0, 4.0]])
    together = roi_align(x, rois, (3, 2), 1.0, -1)
    one_by_one = torch.cat([roi_align(x, r[None], (3, 2), 1.0, -1) for r in rois])
    assert torch.equal(together, one_by_one)


def test_empty_inputs():
    x = torch.randn(2, 3, 5, 5)
    assert roi_align(x, torch.zeros(0, 5), 7).shape == (0, 3, 7, 7)
    no_boxes = [torch.zeros(0, 4), torch.zeros(0, 4)]
    assert roi_align(x, no_boxes, (2, 3)).shape == (0, 3, 2, 3)


def test_list_of_boxes_equals_batch_index_format():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 10, 12, generator=g)
    rois = random_rois(6, 2, 10, 12, g, dtype=torch.float32)
    rois = rois[rois[:, 0].argsort(stable=True)]
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    assert torch.equal(roi_align(x, per_image, 3, 0.5, 2),
                       roi_align(x, rois, 3, 0.5, 2))


def test_channels_last_input_gives_the_same_result():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 10, 12, generator=g)
    rois = random_rois(6, 2, 10, 12, g, dtype=torch.float32)
    x_last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(roi_align(x_last, rois, 3), roi_align(x, rois, 3))


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, True), (1, True)])
def test_gradcheck_float64(sampling_ratio, aligned):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(4, 2, 6, 7, g)
    assert torch.autograd.gradcheck(
        lambda t: roi_align(t, rois, (2, 3), 0.9, sampling_ratio, aligned), (x,))


def test_gradient_of_average_pooling_case():
    """aligned=True box on pixel boundaries, 2 x 2 bins: each pixel gets 1/4."""
    x = linear_map().requires_grad_()
    box = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    roi_align(x, box, 2, 1.0, 2, True).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 0.25))


def test_module_and_bad_input():
    x = torch.randn(1, 2, 5, 5)
    rois = torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0]])
    assert torch.equal(RoIAlign(2, 1.0, 2)(x, rois), roi_align(x, rois, 2, 1.0, 2))
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_align(x, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match="batch index 1.0, expected 0 .. 0"):
        roi_align(x, torch.tensor([[1.0, 0.0, 0.0, 2.0, 2.0]]), 2)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        roi_align(x[0], rois, 2)
    with pytest.raises(ValueError, match=r"boxes\[0\] must be a tensor \[L, 4\]"):
        roi_align(x, [torch.zeros(2, 5)], 2)


def test_small_entry_budget_splits_the_work_without_changing_it(monkeypatch):
    """Pieces of a grid size and batches of pieces (MAX_ENTRIES) give the same
    result as one call; RoIs without samples sit among the others."""
    module = importlib.import_module("utils.models.detection.roi_align")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=torch.float64)
    rois = random_rois(20, 2, 12, 12, g)
    rois[5, 1:] = rois[5, 1:3].repeat(2)  # zero area: no samples when aligned
    expected = naive_roi_align(x, rois, (2, 3), 1.0, -1, True)
    assert torch.allclose(roi_align(x, rois, (2, 3), 1.0, -1, True), expected,
                          rtol=0, atol=1e-12)
    monkeypatch.setattr(module, "MAX_ENTRIES", 100)
    assert torch.allclose(roi_align(x, rois, (2, 3), 1.0, -1, True), expected,
                          rtol=0, atol=1e-12)
