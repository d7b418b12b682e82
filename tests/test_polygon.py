"""polygon_to_mask matches COCO's rleFrPoly (cocoapi maskApi.c): hand-worked
cases, and a line-by-line scalar transcription of the C code."""

import math

import numpy as np
import pytest

from utils.data.formats import polygon_to_mask, rle_decode


def rle_fr_poly_reference(xy, h, w):
    """Scalar transcription of rleFrPoly, loop for loop (C int casts truncate)."""
    k = len(xy) // 2
    scale = 5.0
    x = [int(scale * xy[2 * j] + 0.5) for j in range(k)] + [0]
    y = [int(scale * xy[2 * j + 1] + 0.5) for j in range(k)] + [0]
    x[k], y[k] = x[0], y[0]
    u, v = [], []
    for j in range(k):
        xs, xe, ys, ye = x[j], x[j + 1], y[j], y[j + 1]
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe = xe, xs
            ys, ye = ye, ys
        if dx >= dy:
            s = (ye - ys) / dx if dx else float("nan")
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(t + xs)
                v.append(int(ys + s * t + 0.5) if dx else -(2**31))
        else:
            s = (xe - xs) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(t + ys)
                u.append(int(xs + s * t + 0.5))
    px, py = [], []
    for j in range(1, len(u)):
        if u[j] != u[j - 1]:
            xd = float(u[j] if u[j] < u[j - 1] else u[j] - 1)
            xd = (xd + 0.5) / scale - 0.5
            if math.floor(xd) != xd or xd < 0 or xd > w - 1:
                continue
            yd = float(min(v[j - 1], v[j]))
            yd = (yd + 0.5) / scale - 0.5
            yd = 0 if yd < 0 else (min(yd, h))
            px.append(int(xd))
            py.append(math.ceil(yd))
    a = sorted([px[j] * h + py[j] for j in range(len(px))] + [h * w])
    p = 0
    for j in range(len(a)):
        a[j], p = a[j] - p, a[j]
    b = [a[0]]
    j = 1
    while j < len(a):
        if a[j] > 0:
            b.append(a[j])
            j += 1
        else:
            j += 1
            if j < len(a):
                b[-1] += a[j]
                j += 1
    return rle_decode(b, h, w)


def test_integer_square_covers_its_pixels():
    # worked by hand: columns 0-3 start a run at row 0 and end it at row 4
    mask = polygon_to_mask([[0, 0, 4, 0, 4, 4, 0, 4]], 6, 6)
    expected = np.zeros((6, 6), np.uint8)
    expected[:4, :4] = 1
    assert np.array_equal(mask, expected)


def test_half_pixel_square_differs_from_the_pixel_centre_rule():
    # worked by hand: x 0.5 -> 3 and 2.5 -> 13 at scale 5; crossings of the
    # column centre lines at 7 and 12 (columns 1, 2); the top edge starts the
    # runs at ceil(0.2) = row 1, the bottom edge ends them at ceil(2.2) = row 3.
    mask = polygon_to_mask([[0.5, 0.5, 2.5, 0.5, 2.5, 2.5, 0.5, 2.5]], 4, 4)
    expected = np.zeros((4, 4), np.uint8)
    expected[1:3, 1:3] = 1
    assert np.array_equal(mask, expected)


def test_triangle_by_hand():
    # Right triangle (0,0), (4,0), (0,4), worked by hand: at scale 5 the
    # hypotenuse is walked as (u, 20 - u); it crosses column c's centre line
    # (u = 5c + 2) between v = 17 - 5c and 18 - 5c, and the smaller one,
    # mapped back ((17 - 5c + 0.5) / 5 - 0.5 = 3 - c), ends the run that the
    # top edge started at row 0. So column c holds rows 0 .. 2 - c: pixels whose
    # centre lies on the hypotenuse (r + c = 3) are out.
    mask = polygon_to_mask([[0, 0, 4, 0, 0, 4]], 5, 5)
    expected = np.zeros((5, 5), np.uint8)
    for col, rows in enumerate([3, 2, 1, 0]):
        expected[:rows, col] = 1
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize("seed", range(30))
def test_matches_the_scalar_transcription(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 30, size=2)
    n = rng.integers(3, 9)
    # vertices may leave the image and repeat, as COCO's sometimes do
    xy = rng.uniform(-3, max(h, w) + 3, size=2 * n).round(rng.integers(0, 3))
    mask = polygon_to_mask([xy.tolist()], h, w)
    assert np.array_equal(mask, rle_fr_poly_reference(xy.tolist(), h, w))


def test_polygons_of_one_object_are_merged():
    a = [0, 0, 2, 0, 2, 2, 0, 2]
    b = [3, 3, 5, 3, 5, 5, 3, 5]
    both = polygon_to_mask([a, b], 6, 6)
    assert np.array_equal(both, polygon_to_mask([a], 6, 6) | polygon_to_mask([b], 6, 6))
    assert both.sum() == 8


def test_too_few_points():
    with pytest.raises(ValueError, match="at least 3 points"):
        polygon_to_mask([[0, 0, 1, 1]], 4, 4)


def test_matches_pycocotools_when_installed():
    """Bit for bit against COCO's own C code (not a dependency: skipped here)."""
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 60, size=2))
        polys = [rng.uniform(-5, max(h, w) + 5, size=2 * rng.integers(3, 12))
                 .round(rng.integers(0, 3)).tolist() for _ in range(rng.integers(1, 4))]
        expected = mask_api.decode(mask_api.merge(mask_api.frPyObjects(polys, h, w)))
        assert np.array_equal(polygon_to_mask(polys, h, w), expected)
