"""Checks for chapter 10 (classical segmentation and the dense CRF): each
compares the learner's function with the canonical copy in
:mod:`utils.classical` or :mod:`utils.crf` on fixed inputs."""

from __future__ import annotations

import torch

from utils import crf
from utils.checks.common import (
    assert_close,
    assert_equal,
    exercise,
    fail,
    learner,
    ok,
    to_numpy,
)
from utils.classical import otsu
from utils.classical import region_growing as rg


def _histograms():
    g = torch.Generator().manual_seed(10)
    bimodal = torch.cat([torch.randint(10, 40, (300,), generator=g),
                         torch.randint(150, 220, (200,), generator=g)])
    cases = {
        "a bimodal 256-bin histogram": torch.bincount(bimodal, minlength=256).double(),
        "random counts over 16 bins": torch.randint(0, 20, (16,), generator=g).double(),
        "two full bins at the ends, empty between": torch.tensor(
            [5.0, 0, 0, 0, 0, 0, 0, 3.0]),
        "frequencies, not counts": torch.rand(10, generator=g).double() / 10,
    }
    return cases


@exercise(forbid=[otsu.between_class_variance, otsu.otsu_threshold],
          hints=["sigma_B^2(t) = w0 w1 (mu0 - mu1)^2, with w0 the fraction of "
                 "pixels in bins below t and mu0 their mean bin value; every "
                 "quantity is a cumulative sum over the normalised histogram",
                 "pad the cumulative sums with a leading 0 so that t runs from 0 "
                 "to L, and put 0 wherever one class is empty (no division by 0)"])
def check_between_class_variance(between_class_variance) -> None:
    """``between_class_variance(histogram [L])`` -> ``sigma_B^2(t) [L + 1]``."""
    for name, h in _histograms().items():
        what = f"between_class_variance on {name}"
        got = learner(between_class_variance, h.clone(), what=what)
        expected = otsu.between_class_variance(h)
        if isinstance(got, torch.Tensor) and got.shape == (len(h),):
            fail(f"{what}: {len(h)} values for {len(h)} bins", f"{len(h) + 1} values",
                 f"{len(h)} values", hint="one value per threshold t = 0, 1, ..., L: "
                 "t bins below the threshold, so t = 0 and t = L are included")
        g = to_numpy(got) if isinstance(got, torch.Tensor) else None
        if g is not None and g.shape == tuple(expected.shape):
            if torch.isnan(got).any():
                fail(f"{what}: NaN where a class is empty", hint="a threshold "
                     "that leaves a class empty splits nothing: give it 0")
            e = expected.numpy()
            if torch.allclose(got.double()[:-1], expected[1:], rtol=1e-4, atol=1e-8) \
                    and not torch.allclose(got.double(), expected, rtol=1e-4):
                fail(f"{what}: shifted by one threshold", hint="class 0 is the bins "
                     "*below* t (bin t itself belongs to class 1)")
            nonzero = e > 1e-12 * max(e.max(), 1)
            ratio = g[nonzero] / e[nonzero]
            if nonzero.any() and abs(ratio.std()) < 1e-6 * abs(ratio.mean()) and \
                    abs(ratio.mean() - 1) > 1e-3:
                fail(f"{what}: right shape, off by a constant factor "
                     f"{ratio.mean():.4g}", hint="normalise the histogram to "
                     "frequencies (divide by its sum) before the cumulative sums")
        scale = float(expected.max())
        assert_close(got, expected, what, atol=1e-6 * max(scale, 1.0), rtol=1e-4)
    ok("between_class_variance matches utils.classical.otsu for four histograms")


def _region_problems():
    g = torch.Generator().manual_seed(11)
    problems = []
    for k in range(4):
        C = 1 if k == 0 else 3
        image = torch.rand(C, 9, 8, generator=g)
        image[:, :, 4:] += 0.6  # two halves of different brightness
        image /= image.max()
        labels = torch.zeros(9, 8, dtype=torch.int64)
        for _ in range(2 + k):  # small blobs of a few regions
            y, x = torch.randint(0, 8, (2,), generator=g).tolist()
            labels[y : y + 2, x : x + 2] = int(torch.randint(1, 4, (1,), generator=g))
        problems.append((image, labels, 0.15 + 0.1 * k))
    return problems


@exercise(forbid=[rg.grow_step, rg.region_grow, rg.region_means, rg.neighbours],
          hints=["first each region's mean colour over its current pixels; then, "
                 "for each unlabelled pixel, look at its 4 neighbours: each "
                 "labelled one proposes its region, at the distance between the "
                 "pixel's colour and that region's mean",
                 "keep the nearest proposal (the smaller label at equal distance) "
                 "and accept it only if the distance is <= threshold; labelled "
                 "pixels never change"])
def check_grow_step(grow_step) -> None:
    """``grow_step(image [C, H, W], labels int64 [H, W], threshold)`` -> labels."""
    for k, (image, labels, threshold) in enumerate(_region_problems()):
        what = f"grow_step on problem {k} (threshold {threshold:.2f})"
        got = learner(grow_step, image.clone(), labels.clone(), threshold, what=what)
        expected = rg.grow_step(image, labels, threshold)
        if isinstance(got, torch.Tensor) and got.shape == labels.shape:
            labelled = labels > 0
            if not torch.equal(got[labelled], labels[labelled]):
                fail(f"{what}: an already labelled pixel changed its label",
                     hint="only unlabelled pixels (label 0) can join a region")
            if torch.equal(got, rg.grow_step(image, labels, threshold, 8)) and \
                    not torch.equal(got, expected):
                fail(f"{what}: you grew through diagonal neighbours",
                     hint="use the 4 neighbours (up, down, left, right) only")
            if torch.equal(got, rg.grow_step(image, labels, float("inf"))) and \
                    not torch.equal(got, expected):
                fail(f"{what}: every candidate joined, however far its colour",
                     hint="a candidate joins only if its distance to the region's "
                          "mean is <= threshold")
        assert_equal(got, expected, what)
    ok("grow_step matches utils.classical.region_growing on four problems")


def _crf_problems():
    g = torch.Generator().manual_seed(12)
    problems = []
    for K, H, W in ((3, 4, 5), (2, 6, 3), (4, 5, 5)):
        image = torch.rand(3, H, W, generator=g)
        unary = -torch.log(torch.rand(K, H * W, generator=g).softmax(0))
        q = torch.rand(K, H * W, generator=g).softmax(0)
        appearance = crf.appearance_features(image, 2.0, 0.4)
        smoothness = crf.smoothness_features(H, W, 1.5)
        problems.append((unary, q, appearance, smoothness, 1.3, 0.8))
    return problems


@exercise(forbid=[crf.mean_field_update, crf.pairwise_kernel, crf.gaussian_kernel,
                  crf.dense_crf, crf.message_function],
          hints=["with Potts, the other labels' probabilities at a pixel j sum to "
                 "1 minus its probability of l; what does not depend on l cancels "
                 "in the normalisation, so label l's new score at pixel i is minus "
                 "its unary plus the kernel-weighted sum, over the other pixels, "
                 "of their current probability of that same label l",
                 "k is w1 exp(-|a_i - a_j|^2 / 2) + w2 exp(-|s_i - s_j|^2 / 2) "
                 "on the two feature sets (torch.cdist gives |a_i - a_j|); set "
                 "its diagonal to 0, multiply by Q and softmax over the labels"])
def check_mean_field_update(mean_field_update) -> None:
    """``mean_field_update(unary, q, appearance, smoothness, w1, w2)`` -> Q."""
    for k, (unary, q, a, s, w1, w2) in enumerate(_crf_problems()):
        K, N = q.shape
        what = f"mean_field_update on problem {k} ({K} labels, {N} pixels)"
        got = learner(mean_field_update, unary.clone(), q.clone(), a.clone(),
                      s.clone(), w1, w2, what=what)
        expected = crf.mean_field_update(unary, q, a, s, w1, w2)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.float()
            if not torch.allclose(got.sum(0), torch.ones(N), atol=1e-4):
                fail(f"{what}: the columns do not sum to 1", hint="normalise over "
                     "the labels (dim 0): a softmax of the negated costs")
            message = q @ crf.pairwise_kernel(a, s, w1, w2).T
            variants = {
                "with j = i": (torch.softmax(-unary + message + (w1 + w2) * q, 0),
                               "the sum runs over j != i: set the kernel's diagonal "
                               "(a pixel with itself, k = w1 + w2) to 0"),
                "with the sign of the pairwise term flipped": (
                    torch.softmax(-unary - message, 0),
                    "Potts charges for disagreeing, so agreeing neighbours "
                    "*raise* Q_i(l): the message enters with a + sign"),
            }
            for name, (variant, hint) in variants.items():
                if torch.allclose(got, variant, atol=1e-5):
                    fail(f"{what}: your update is the one {name}", hint=hint)
        assert_close(got, expected, what, atol=1e-5, rtol=1e-4)
    ok("mean_field_update matches utils.crf.mean_field_update on three problems")
