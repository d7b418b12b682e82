"""Classical segmentation (chapter 10) against brute force, naive loops and
hand-made images."""

import itertools
import math
from collections import deque

import pytest
import torch

from utils.classical import compare, edges, morphology, otsu
from utils.classical import region_growing as rg
from utils.classical.graph_cut import (
    GraphCutConfig,
    colour_histogram_costs,
    contrast_weights,
    cut_energy,
    graph_cut,
    grid_edges,
    minimise_binary_energy,
)
from utils.classical.maxflow import maxflow
from utils.classical.watershed import watershed

# ------------------------------------------------------------------ Otsu


def brute_force_sigma(values, bins):
    """sigma_B^2(t) for t = 0..bins straight from the pixels: split them by
    bin index < t and compare the two groups' means (in bin units)."""
    index = [min(int(v * bins), bins - 1) for v in values.flatten().tolist()]
    n = len(index)
    out = []
    for t in range(bins + 1):
        low = [b for b in index if b < t]
        high = [b for b in index if b >= t]
        if not low or not high:
            out.append(0.0)
            continue
        w0, w1 = len(low) / n, len(high) / n
        mu0, mu1 = sum(low) / len(low), sum(high) / len(high)
        out.append(w0 * w1 * (mu0 - mu1) ** 2)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(4))
def test_between_class_variance_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    image = torch.cat([torch.rand(60, generator=g) * 0.4,
                       0.5 + torch.rand(40 + 10 * seed, generator=g) * 0.5])
    bins = 32
    got = otsu.between_class_variance(otsu.grey_histogram(image, bins))
    expected = brute_force_sigma(image, bins)
    assert torch.allclose(got, expected, atol=1e-9)
    t = otsu.otsu_threshold(image, bins)
    assert expected[round(t * bins)] == pytest.approx(expected.max().item(), abs=1e-12)


def test_otsu_threshold_splits_two_modes_in_the_middle_of_the_gap():
    image = torch.tensor([0.1] * 30 + [0.2] * 10 + [0.8] * 25)  # bins 25, 51, 204
    t = otsu.otsu_threshold(image, 256)
    # Every threshold in 52..204 separates the modes equally well: the middle.
    assert t == (52 + 204 + 1) // 2 / 256
    assert ((image >= t) == (image > 0.5)).all()


def test_otsu_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        otsu.grey_histogram(torch.tensor([0.5, 1.5]))
    with pytest.raises(TypeError, match="floating"):
        otsu.grey_histogram(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="histogram"):
        otsu.between_class_variance(torch.zeros(8))


# ------------------------------------------------------------------ edges


def naive_correlate(image, kernel):
    H, W = image.shape
    out = torch.zeros(H, W)
    for y in range(H):
        for x in range(W):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v = min(max(y + dy, 0), H - 1)  # replicate the border
                    u = min(max(x + dx, 0), W - 1)
                    out[y, x] += kernel[dy + 1, dx + 1] * image[v, u]
    return out


def test_sobel_matches_a_naive_correlation_and_a_ramp():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(6, 7, generator=g)
    gx, gy = edges.sobel(image)
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    assert torch.allclose(gx, naive_correlate(image, kx), atol=1e-6)
    assert torch.allclose(gy, naive_correlate(image, kx.T), atol=1e-6)
    ramp = torch.arange(8.0)[None].expand(5, 8)  # rises by 1 per column
    gx, gy = edges.sobel(ramp)
    assert torch.allclose(gx[:, 1:-1], torch.ones(5, 6))
    assert (gy == 0).all()


def naive_nms(gx, gy):
    H, W = gx.shape
    mag = torch.hypot(gx, gy)
    out = torch.zeros(H, W)
    for y in range(H):
        for x in range(W):
            degrees = math.degrees(math.atan2(gy[y, x], gx[y, x])) % 180
            step = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}[
                round(degrees / 45) % 4]
            around = []
            for s in (1, -1):
                v, u = y + s * step[0], x + s * step[1]
                around.append(mag[v, u] if 0 <= v < H and 0 <= u < W else 0.0)
            if mag[y, x] > 0 and mag[y, x] >= max(around):
                out[y, x] = mag[y, x]
    return out


def test_non_maximum_suppression_matches_a_naive_loop_and_thins_an_edge():
    g = torch.Generator().manual_seed(1)
    gx, gy = torch.randn(7, 8, generator=g), torch.randn(7, 8, generator=g)
    assert torch.allclose(edges.non_maximum_suppression(gx, gy), naive_nms(gx, gy))
    # A blurred vertical step: the gradient is a ridge 3 pixels wide, NMS keeps
    # its crest only.
    step = torch.tensor([0, 0, 0, 0.25, 0.75, 1, 1, 1])[None].expand(6, 8)
    kept = edges.non_maximum_suppression(*edges.sobel(step)) > 0
    assert kept.any(0).nonzero().flatten().tolist() == [3, 4]
    assert kept[:, 3:5].all()


def test_hysteresis_keeps_weak_edges_connected_to_strong_ones():
    m = torch.tensor([[0.9, 0.5, 0.5, 0.0, 0.5],
                      [0.0, 0.0, 0.0, 0.0, 0.0]])
    got = edges.hysteresis(m, low=0.3, high=0.8)
    assert got.tolist() == [[True, True, True, False, False], [False] * 5]


# ------------------------------------------------------------ region growing


def naive_grow_step(image, labels, threshold, offsets):
    C, H, W = image.shape
    regions = int(labels.max())
    means = {}
    for r in range(1, regions + 1):
        pixels = [image[:, y, x] for y in range(H) for x in range(W)
                  if labels[y, x] == r]
        if pixels:
            means[r] = torch.stack(pixels).mean(0)
    out = labels.clone()
    for y in range(H):
        for x in range(W):
            if labels[y, x] != 0:
                continue
            best = None  # (distance, label)
            for dy, dx in offsets:
                v, u = y + dy, x + dx
                if 0 <= v < H and 0 <= u < W and labels[v, u] > 0:
                    r = int(labels[v, u])
                    d = float((image[:, y, x] - means[r]).norm())
                    if best is None or (d, r) < best:
                        best = (d, r)
            if best is not None and best[0] <= threshold:
                out[y, x] = best[1]
    return out


@pytest.mark.parametrize("connectivity", [4, 8])
def test_grow_step_matches_a_naive_loop(connectivity):
    g = torch.Generator().manual_seed(connectivity)
    for _ in range(5):
        image = torch.rand(3, 7, 6, generator=g)
        labels = torch.randint(0, 4, (7, 6), generator=g)
        labels[torch.rand(7, 6, generator=g) < 0.6] = 0
        got = rg.grow_step(image, labels, 0.5, connectivity)
        offsets = rg.FOUR if connectivity == 4 else rg.EIGHT
        assert torch.equal(got, naive_grow_step(image, labels, 0.5, offsets))


def test_region_grow_fills_two_flat_regions_from_one_seed_each():
    image = torch.zeros(1, 8, 10)
    image[:, :, 6:] = 1.0
    image += 0.02 * torch.randn(1, 8, 10, generator=torch.Generator().manual_seed(0))
    seeds = torch.zeros(8, 10, dtype=torch.int64)
    seeds[4, 1], seeds[2, 8] = 1, 2
    grown = rg.region_grow(image, seeds, threshold=0.2)
    expected = torch.ones(8, 10, dtype=torch.int64)
    expected[:, 6:] = 2
    assert torch.equal(grown, expected)
    # Too strict a threshold: nothing joins, the seeds stay alone.
    assert torch.equal(rg.region_grow(image, seeds, threshold=0.0), seeds)


def test_region_grow_stops_where_a_ramp_leaves_the_threshold():
    image = torch.arange(10.0)[None, None].expand(1, 3, 10) / 10  # 0.0 .. 0.9
    seeds = torch.zeros(3, 10, dtype=torch.int64)
    seeds[:, 0] = 1
    grown = rg.region_grow(image, seeds, threshold=0.25)
    # The mean follows the region: columns 0..k have mean k / 20, and column
    # k + 1 joins while (k + 1) / 10 - k / 20 <= 0.25, i.e. up to column 4.
    assert grown[0].tolist() == [1] * 5 + [0] * 5


def test_region_growing_rejects_bad_labels():
    with pytest.raises(TypeError, match="int64"):
        rg.grow_step(torch.rand(3, 4, 4), torch.zeros(4, 4, dtype=torch.int32), 0.1)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        rg.grow_step(torch.rand(3, 4, 4), torch.zeros(4, 5, dtype=torch.int64), 0.1)


# ---------------------------------------------------------------- watershed


def test_watershed_splits_two_basins_at_the_ridge():
    # Two valleys along x with a ridge at column 6 (a step on top of it, so
    # the ridge is the highest point between the markers).
    x = torch.arange(12.0)
    profile = torch.minimum((x - 2).abs(), (x - 9).abs())
    surface = profile[None].expand(5, 12).clone()
    markers = torch.zeros(5, 12, dtype=torch.int64)
    markers[2, 2], markers[2, 9] = 1, 2
    labels = watershed(surface, markers)
    assert (labels[:, :6] == 1).all() and (labels[:, 6:] == 2).all()


def test_watershed_respects_the_mask_and_a_higher_wall():
    surface = torch.zeros(5, 7)
    surface[:, 3] = 5.0  # a wall
    markers = torch.zeros(5, 7, dtype=torch.int64)
    markers[0, 0] = 1
    markers[4, 6] = 2
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2, :] = False  # a moat across the image
    labels = watershed(surface, markers, mask=mask)
    assert (labels[2] == 0).all()  # outside the mask
    # Marker 1 floods the top-left, crosses the wall (nothing else reaches
    # there first) and marker 2 the bottom: the moat separates them.
    assert (labels[:2] == 1).all() and (labels[3:] == 2).all()
    # With no moat the wall decides: each side to its marker.
    labels = watershed(surface, markers)
    assert (labels[:, :3] == 1).all() and (labels[:, 4:] == 2).all()


def test_watershed_floods_in_order_of_height():
    # A 1-D landscape: marker 1 in a deep basin, marker 2 on a high plateau.
    # The low ground between is reached through marker 1's side first.
    surface = torch.tensor([[0.0, 1.0, 1.0, 2.0, 1.0, 1.0, 9.0, 9.0]])
    markers = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 2]])
    labels = watershed(surface, markers)
    assert labels.tolist() == [[1, 1, 1, 1, 1, 1, 1, 2]]


# -------------------------------------------------------------- morphology


def naive_components(mask, connectivity):
    H, W = mask.shape
    steps = rg.FOUR if connectivity == 4 else rg.EIGHT
    labels = torch.zeros(H, W, dtype=torch.int64)
    count = 0
    for y in range(H):
        for x in range(W):
            if mask[y, x] and labels[y, x] == 0:
                count += 1
                labels[y, x] = count
                queue = deque([(y, x)])
                while queue:
                    v, u = queue.popleft()
                    for dy, dx in steps:
                        a, b = v + dy, u + dx
                        if 0 <= a < H and 0 <= b < W and mask[a, b] and \
                                labels[a, b] == 0:
                            labels[a, b] = count
                            queue.append((a, b))
    return labels


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_match_a_flood_fill(connectivity):
    g = torch.Generator().manual_seed(connectivity)
    for _ in range(5):
        mask = torch.rand(9, 11, generator=g) < 0.5
        assert torch.equal(morphology.connected_components(mask, connectivity),
                           naive_components(mask, connectivity))


def test_distance_transform_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(9, 13, generator=g) < 0.8
    background = (~mask).nonzero().float()
    expected = torch.zeros(9, 13)
    for y, x in mask.nonzero().tolist():
        expected[y, x] = (background - torch.tensor([y, x])).norm(dim=1).min()
    assert torch.allclose(morphology.distance_transform(mask), expected, atol=1e-5)
    assert torch.isinf(morphology.distance_transform(torch.ones(3, 3,
                                                                dtype=torch.bool))).all()


def test_h_maxima_keeps_the_peaks_that_stand_out_by_h():
    # Peaks of 5 (at 2) and 3 (at 7), the valley between them at 2: the
    # second stands out by 1, the first by 5 (the image's minimum is 0).
    f = torch.tensor([[0.0, 2, 5, 4, 3, 2, 2.5, 3, 1, 0]])
    assert morphology.h_maxima(f, 0.5).nonzero()[:, 1].tolist() == [2, 7]
    assert morphology.h_maxima(f, 2.0).nonzero()[:, 1].tolist() == [2]


# ------------------------------------------------------------------ max-flow


def edmonds_karp(n, source, sink, pairs, forward, backward):
    """Max-flow on a dense capacity matrix, shortest augmenting paths."""
    N, s, t = n + 2, n, n + 1
    cap = [[0.0] * N for _ in range(N)]
    for i in range(n):
        cap[s][i] += source[i]
        cap[i][t] += sink[i]
    for (i, j), f, b in zip(pairs, forward, backward):
        cap[i][j] += f
        cap[j][i] += b
    flow = 0.0
    while True:
        prev = [-1] * N
        prev[s] = s
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v in range(N):
                if prev[v] < 0 and cap[u][v] > 1e-12:
                    prev[v] = u
                    queue.append(v)
        if prev[t] < 0:
            return flow
        bottleneck, v = float("inf"), t
        while v != s:
            bottleneck = min(bottleneck, cap[prev[v]][v])
            v = prev[v]
        v = t
        while v != s:
            cap[prev[v]][v] -= bottleneck
            cap[v][prev[v]] += bottleneck
            v = prev[v]
        flow += bottleneck


def test_maxflow_matches_edmonds_karp_on_random_graphs():
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(1, 10, (1,), generator=g))
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)
                 if torch.rand(1, generator=g) < 0.5]
        caps = lambda k: (torch.randint(0, 10, (k,), generator=g)  # noqa: E731
                          * (torch.rand(k, generator=g) < 0.7)).double()
        source, sink = caps(n), caps(n)
        forward, backward = caps(len(pairs)), caps(len(pairs))
        flow, side = maxflow(source, sink, torch.tensor(pairs).reshape(-1, 2),
                             forward, backward)
        expected = edmonds_karp(n, source.tolist(), sink.tolist(), pairs,
                                forward.tolist(), backward.tolist())
        assert flow == pytest.approx(expected, abs=1e-9), trial
        # The returned side is a cut of that capacity.
        cut = float(sink[side].sum() + source[~side].sum())
        for (i, j), f, b in zip(pairs, forward.tolist(), backward.tolist()):
            cut += f * (side[i] and not side[j]) + b * (side[j] and not side[i])
        assert cut == pytest.approx(expected, abs=1e-9), trial


def naive_energy_function(unary, image, lam, connectivity):
    """E(x) written out pixel by pixel and pair by pair, for flat labellings
    ``x`` (a tuple of H * W bits in raster order)."""
    C, H, W = image.shape
    steps = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    pairs = []
    for y, x in itertools.product(range(H), range(W)):
        for dy, dx in steps:
            v, u = y + dy, x + dx
            if 0 <= v < H and 0 <= u < W:
                d = sum((float(image[c, y, x]) - float(image[c, v, u])) ** 2
                        for c in range(C))
                pairs.append((y * W + x, v * W + u, d, math.hypot(dy, dx)))
    two_sigma2 = 2 * sum(d for _, _, d, _ in pairs) / len(pairs)
    pairs = [(p, q, lam * math.exp(-d / two_sigma2) / length)
             for p, q, d, length in pairs]
    costs = unary.flatten(1).tolist()

    def energy(bits):
        data = sum(costs[b][p] for p, b in enumerate(bits))
        return data + sum(w for p, q, w in pairs if bits[p] != bits[q])

    return energy


@pytest.mark.parametrize("connectivity", [4, 8])
def test_minimum_cut_is_the_least_energy_of_all_labellings(connectivity):
    g = torch.Generator().manual_seed(connectivity)
    H, W, lam = 3, 4, 0.8
    for _ in range(3):
        image = torch.rand(3, H, W, generator=g, dtype=torch.float64)
        unary = torch.rand(2, H, W, generator=g, dtype=torch.float64) * 2
        edges_, length = grid_edges(H, W, connectivity)
        weights = lam * contrast_weights(image, edges_, length)
        labels, energy = minimise_binary_energy(unary, edges_, weights)
        naive = naive_energy_function(unary, image, lam, connectivity)
        best = min(naive(bits) for bits in itertools.product((0, 1), repeat=H * W))
        assert energy == pytest.approx(best, abs=1e-9)
        assert naive(labels.tolist()) == pytest.approx(best, abs=1e-9)
        assert cut_energy(labels, unary, edges_, weights) == pytest.approx(best,
                                                                           abs=1e-9)


def test_graph_cut_finds_a_square_from_two_scribbles():
    g = torch.Generator().manual_seed(0)
    image = torch.full((3, 16, 16), 0.2) + 0.05 * torch.rand(3, 16, 16, generator=g)
    image[:, 4:11, 5:12] = torch.tensor([0.9, 0.4, 0.1])[:, None, None]
    truth = torch.zeros(16, 16, dtype=torch.bool)
    truth[4:11, 5:12] = True
    fg = torch.zeros_like(truth)
    bg = torch.zeros_like(truth)
    fg[7, 8] = True
    bg[0, :] = True
    got = graph_cut(image, fg, bg, GraphCutConfig(lam=2.0))
    assert torch.equal(got, truth)


def test_colour_histogram_costs_are_negative_log_frequencies():
    image = torch.zeros(3, 2, 2)
    image[:, 0, 0] = 0.95  # one white pixel, three black
    scribble = torch.ones(2, 2, dtype=torch.bool)
    costs = colour_histogram_costs(image, scribble, bins=2)
    # 8 colour bins, counts + 1: black 3 + 1, white 1 + 1, total 4 + 8 = 12.
    assert costs[0, 0] == pytest.approx(-math.log(2 / 12))
    assert costs[1, 1] == pytest.approx(-math.log(4 / 12))


def test_graph_cut_rejects_bad_scribbles():
    image = torch.rand(3, 4, 4)
    fg = torch.zeros(4, 4, dtype=torch.bool)
    fg[0, 0] = True
    with pytest.raises(ValueError, match="empty"):
        graph_cut(image, fg, torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="both|foreground and background"):
        graph_cut(image, fg, fg)


def test_colour_gradient_sees_an_edge_of_equal_brightness():
    image = torch.zeros(3, 4, 6)
    image[0, :, :3] = 0.6  # red on the left, green on the right:
    image[1, :, 3:] = 0.6  # the channel mean is flat
    assert edges.gradient_magnitude(image.mean(0)).max() < 1e-6
    colour = edges.gradient_magnitude(image)
    assert torch.allclose(colour[:, 2:4], torch.full((4, 2), 0.6 / 2 * math.sqrt(2)))


# ------------------------------------------------- the chapter's comparison


def square_problem():
    """A bright square thing (class 3) on two stuff regions (classes 0, 1)."""
    g = torch.Generator().manual_seed(0)
    image = torch.full((3, 24, 24), 0.3) + 0.02 * torch.rand(3, 24, 24, generator=g)
    image[:, :, 12:] += 0.2  # the second stuff region is a little brighter
    target = torch.zeros(24, 24, dtype=torch.int64)
    target[:, 12:] = 1
    image[:, 6:16, 5:15] = torch.tensor([0.95, 0.95, 0.9])[:, None, None]
    target[6:16, 5:15] = 3
    return image.clamp(0, 1), target


@pytest.mark.parametrize("method", compare.INTERACTIVE)
def test_interactive_methods_find_a_square_from_clicks(method):
    image, target = square_problem()
    mask = compare.interactive(image, target, method)
    fg, band = compare.binary_scores(mask[None], target[None])
    assert mask.dtype == torch.bool and fg > 0.95 and band > 0.9


def test_binary_scores_and_otsu_polarity():
    image, target = square_problem()
    truth = compare.thing_mask(target)
    assert compare.binary_scores(truth[None], target[None]) == (1.0, 1.0)
    dark = 1 - image  # the square is now darker than the stuff
    assert torch.equal(compare.otsu_best_polarity(dark, target), truth)
    assert compare.binary_target(torch.tensor([0, 3, 255])).tolist() == [0, 1, 255]


def test_coarse_probabilities_are_block_fractions():
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, :4, :4] = 2  # one block of class 2, three of class 0
    target[0, 4:, 4:] = 255  # and one block of ignore
    p = compare.coarse_probabilities(target, 3, stride=4, doubt=0.0)
    assert torch.allclose(p.sum(1), torch.ones(1, 8, 8))
    assert torch.allclose(p[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(p[0, :, 7, 7], torch.full((3,), 1 / 3))  # no information
    # With stride 1 the "prediction" is the truth itself.
    exact = compare.coarse_probabilities(target[:, :4], 3, stride=1, doubt=0.0)
    assert torch.equal(exact.argmax(1), target[:, :4].clamp(max=2))


def two_touching_cells(membrane=True):
    """Two discs of radius 7 whose centres are 12 pixels apart, brighter in
    the middle, with a darker border between them."""
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    d1 = ((ys - 16) ** 2 + (xs - 13) ** 2).sqrt() / 7
    d2 = ((ys - 16) ** 2 + (xs - 25) ** 2).sqrt() / 7
    nearest = torch.minimum(d1, d2)
    image = torch.where(nearest <= 1, 0.8 * (1 - 0.3 * nearest**2), 0.1)
    if membrane:
        image[(nearest <= 1) & (xs == 19)] *= 0.6
    return image.expand(3, 32, 40).clone()


@pytest.mark.parametrize("by", ["distance", "intensity"])
def test_split_cells_separates_two_touching_cells(by):
    image = two_touching_cells()
    merged = morphology.connected_components(image.mean(0) > 0.3)
    assert int(merged.max()) == 1  # one blob for a threshold
    cells = compare.split_cells(image, by)
    assert cells.unique().tolist() == [0, 1, 2]
    left, right = cells[16, 13], cells[16, 25]
    assert left > 0 and right > 0 and left != right
