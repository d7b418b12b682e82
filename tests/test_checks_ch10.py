"""The chapter 10 checks pass independent correct solutions, refuse the
canonical copies, and refuse plausible wrong answers with a useful message."""

import pytest
import torch
import torch.nn.functional as F

from utils import crf
from utils.checks import ch10
from utils.classical import otsu
from utils.classical import region_growing as rg

# ------------------------------------------------------------- independent answers


def sigma_by_loop(histogram):
    """sigma_B^2(t) threshold by threshold, from the class weights and means."""
    p = (histogram / histogram.sum()).tolist()
    out = []
    for t in range(len(p) + 1):
        w0, w1 = sum(p[:t]), sum(p[t:])
        if sum(histogram[:t]) == 0 or sum(histogram[t:]) == 0:
            out.append(0.0)
            continue
        mu0 = sum(i * p[i] for i in range(t)) / w0
        mu1 = sum(i * p[i] for i in range(t, len(p))) / w1
        out.append(w0 * w1 * (mu0 - mu1) ** 2)
    return torch.tensor(out, dtype=torch.float64)


def grow_by_loop(image, labels, threshold, diagonals=False):
    C, H, W = image.shape
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if diagonals:  # a mistake: 8 neighbours
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    means = {}
    for r in labels.unique().tolist():
        if r > 0:
            means[r] = image[:, labels == r].mean(1)
    out = labels.clone()
    for y in range(H):
        for x in range(W):
            if labels[y, x]:
                continue
            options = []
            for dy, dx in steps:
                v, u = y + dy, x + dx
                if 0 <= v < H and 0 <= u < W and labels[v, u] > 0:
                    r = int(labels[v, u])
                    options.append((float((image[:, y, x] - means[r]).norm()), r))
            if options and min(options)[0] <= threshold:
                out[y, x] = min(options)[1]
    return out


def update_by_cdist(unary, q, appearance, smoothness, w1, w2):
    kernel = w1 * torch.exp(-torch.cdist(appearance, appearance) ** 2 / 2) \
        + w2 * torch.exp(-torch.cdist(smoothness, smoothness) ** 2 / 2)
    kernel.fill_diagonal_(0)
    return F.softmax(-unary + q @ kernel, dim=0)


def test_checks_pass_independent_solutions(capsys):
    ch10.check_between_class_variance(sigma_by_loop)
    ch10.check_grow_step(grow_by_loop)
    ch10.check_mean_field_update(update_by_cdist)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("✓ ") for line in lines)


def test_checks_refuse_the_canonical_copies():
    with pytest.raises(AssertionError, match="course.s own solution"):
        ch10.check_between_class_variance(otsu.between_class_variance)
    with pytest.raises(AssertionError, match="course.s own solution"):
        ch10.check_grow_step(lambda im, lab, t: rg.grow_step(im, lab, t))
    with pytest.raises(AssertionError, match="course.s own solution"):
        ch10.check_mean_field_update(crf.mean_field_update)


def test_otsu_check_refuses_common_mistakes():
    with pytest.raises(AssertionError, match="per threshold|t = 0"):
        ch10.check_between_class_variance(lambda h: sigma_by_loop(h)[1:])
    with pytest.raises(AssertionError, match="below"):
        ch10.check_between_class_variance(  # class 0 = bins <= t
            lambda h: torch.cat([sigma_by_loop(h)[1:], torch.zeros(1)]))

    def counts_not_frequencies(h):  # w0, w1 in pixels, not fractions
        return sigma_by_loop(h) * float(h.sum()) ** 2
    with pytest.raises(AssertionError, match="normalise"):
        ch10.check_between_class_variance(counts_not_frequencies)

    def nan_at_the_ends(h):
        s = sigma_by_loop(h)
        s[0] = s[-1] = float("nan")
        return s
    with pytest.raises(AssertionError, match="empty"):
        ch10.check_between_class_variance(nan_at_the_ends)


def test_grow_step_check_refuses_common_mistakes():
    with pytest.raises(AssertionError, match="diagonal"):
        ch10.check_grow_step(lambda im, lab, t: grow_by_loop(im, lab, t, True))
    with pytest.raises(AssertionError, match="threshold"):
        ch10.check_grow_step(lambda im, lab, t: grow_by_loop(im, lab, 1e9))

    def to_neighbour_colour(image, labels, threshold):  # no region mean
        out = labels.clone()
        C, H, W = image.shape
        for y in range(H):
            for x in range(W):
                if labels[y, x]:
                    continue
                options = [(float((image[:, y, x] - image[:, v, u]).norm()),
                            int(labels[v, u]))
                           for v, u in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
                           if 0 <= v < H and 0 <= u < W and labels[v, u] > 0]
                if options and min(options)[0] <= threshold:
                    out[y, x] = min(options)[1]
        return out
    with pytest.raises(AssertionError, match="values differ"):
        ch10.check_grow_step(to_neighbour_colour)


def test_mean_field_check_refuses_common_mistakes():
    def with_self(unary, q, a, s, w1, w2):
        kernel = w1 * torch.exp(-torch.cdist(a, a) ** 2 / 2) \
            + w2 * torch.exp(-torch.cdist(s, s) ** 2 / 2)
        return F.softmax(-unary + q @ kernel, dim=0)
    with pytest.raises(AssertionError, match="j != i"):
        ch10.check_mean_field_update(with_self)

    def flipped(unary, q, a, s, w1, w2):
        return update_by_cdist(unary, -q, a, s, w1, w2)
    with pytest.raises(AssertionError, match=r"\+ sign"):
        ch10.check_mean_field_update(flipped)

    def unnormalised(unary, q, a, s, w1, w2):
        return update_by_cdist(unary, q, a, s, w1, w2) * 2
    with pytest.raises(AssertionError, match="sum to 1"):
        ch10.check_mean_field_update(unnormalised)


def test_a_stub_is_not_done_yet():
    def stub(*args):
        raise NotImplementedError
    with pytest.raises(AssertionError, match="not done"):
        ch10.check_mean_field_update(stub)
