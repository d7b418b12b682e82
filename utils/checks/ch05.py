"""Checks for chapter 05 (SegNet): each compares the learner's code with the
canonical copy in :mod:`utils` on fixed inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.checks.common import (
    assert_close,
    assert_equal,
    exercise,
    fail,
    learner,
    ok,
)
from utils.losses import class_weights
from utils.models import segnet


def _pooled_cases():
    """(name, x, indices, output_size): pooled maps with their indices."""
    g = torch.Generator().manual_seed(11)
    cases = []
    for name, size, ceil, ties in [("a 6x8 map", (6, 8), False, False),
                                   ("a 5x7 map, ceil mode", (5, 7), True, False),
                                   ("a 5x5 map, floor mode", (5, 5), False, False),
                                   ("a 6x6 map with ties", (6, 6), False, True)]:
        x = torch.randn(2, 3, *size, generator=g)
        if ties:  # few distinct values: windows with several maxima
            x = torch.randint(0, 2, (2, 3, *size), generator=g).float()
        pooled, indices = F.max_pool2d(x, 2, ceil_mode=ceil, return_indices=True)
        # unpool other values than the maxima, as a decoder does
        values = torch.randn(pooled.shape, generator=g)
        cases.append((name, values, indices, size))
    return cases


@exercise(forbid=[segnet.max_unpool, F.max_unpool2d, torch._C._nn.max_unpool2d],
          hints=["start from zeros of the unpooled size, flattened per channel, "
                 "and write each value at its index",
                 "an index is row * W + column in the unpooled map, W its "
                 "width; Tensor.scatter_ along the flattened last axis writes "
                 "every value at once"])
def check_max_unpool(max_unpool) -> None:
    """``max_unpool(x, indices, output_size)``: SegNet's unpooling."""
    for name, values, indices, size in _pooled_cases():
        what = f"max_unpool on {name}"
        got = learner(max_unpool, values.clone(), indices.clone(), size, what=what)
        expected = segnet.max_unpool(values, indices, size)
        if isinstance(got, torch.Tensor) and got.shape[-2:] != expected.shape[-2:]:
            fail(f"{what}: wrong size", list(expected.shape), list(got.shape),
                 hint="the unpooled map has the size of the pooling's input "
                      "(output_size), which the pooled map alone cannot tell "
                      "for odd sides")
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            h, w = values.shape[-2:]
            top_left = torch.zeros_like(expected)
            top_left[..., : 2 * h : 2, : 2 * w : 2] = values[..., : (size[0] + 1) // 2,
                                                             : (size[1] + 1) // 2]
            if torch.equal(got, top_left):
                fail(f"{what}: every value is at its window's top-left corner",
                     hint="SegNet puts each value back where its window's "
                          "maximum was: that is what the indices record")
        assert_equal(got, expected, what)
    ok("max_unpool places every value at its maximum's position (odd sizes and "
       "ties included)")


def _counts():
    """Per-image pixel counts [N, C]: a frequent class, rare ones, one that
    appears in few images, one that never does."""
    return torch.tensor([[900, 50, 40, 10, 0, 0, 0, 0],
                         [800, 100, 60, 0, 40, 0, 0, 0],
                         [700, 150, 100, 30, 0, 20, 0, 0],
                         [950, 20, 30, 0, 0, 0, 0, 0],
                         [600, 200, 100, 50, 30, 10, 10, 0]])


@exercise(forbid=[class_weights.median_frequency_weights],
          hints=["f_c is the pixels of class c divided by the pixels of the "
                 "images in which c appears at all; the weight is median(f) / f_c",
                 "take the median over the classes that appear (the mean of the "
                 "two middle values for an even number of them); a class that "
                 "never appears gets weight 0"])
def check_median_frequency(median_frequency_weights) -> None:
    """``median_frequency_weights(counts [N, C])``: SegNet's class weights."""
    counts = _counts()
    for what, c in (("median_frequency_weights(counts)", counts),
                    ("median_frequency_weights(counts[:, :6])", counts[:, :6])):
        got = learner(median_frequency_weights, c.clone(), what=what)
        expected = class_weights.median_frequency_weights(c)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got64 = got.double()
            if not torch.isfinite(got64).all():
                fail(f"{what}: your weights hold inf or NaN",
                     hint="a class that never appears has no frequency: give it "
                          "weight 0 instead of dividing by 0")
            present = c.sum(0) > 0
            freq = c.sum(0).double() / c.sum()  # over all images' pixels
            plain = torch.where(present, freq[present].quantile(0.5) / freq, 0.0)
            if torch.allclose(got64, plain, rtol=1e-4):
                fail(f"{what}: your frequencies divide by all images' pixels",
                     hint="Eigen & Fergus divide a class's pixels by the pixels "
                          "of the images in which it appears")
            f = expected.double()
            lower = _lower_median_weights(c)
            if not torch.allclose(f, lower) and torch.allclose(got64, lower,
                                                                rtol=1e-4):
                fail(f"{what}: your median is the lower of the two middle values",
                     hint="torch.median returns the lower middle value for an even "
                          "number of classes; the median is the mean of the two "
                          "(torch.quantile(f, 0.5))")
        assert_close(got, expected, what, atol=1e-6, rtol=1e-5)
    ok("median_frequency_weights gives SegNet's weights (absent classes 0, even "
       "and odd numbers of classes)")


def _lower_median_weights(counts):
    counts = counts.double()
    seen = (counts.sum(1, keepdim=True) * (counts > 0)).sum(0)
    present = seen > 0
    freq = torch.where(present, counts.sum(0) / seen.clamp(min=1), 0.0)
    return torch.where(present, freq[present].median() / freq.clamp(min=1e-300), 0.0)
