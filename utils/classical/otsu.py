"""Otsu's threshold: the grey level that best splits a histogram in two
(chapter 10).

Otsu, "A threshold selection method from gray-level histograms", IEEE Trans.
SMC 1979. Split the histogram's bins into a background class (bins below
``t``) and a foreground class (bins ``t`` and above). With class weights
``w0(t)``, ``w1(t)`` (fractions of the pixels) and class means ``mu0(t)``,
``mu1(t)``, the total variance splits into a within-class and a between-class
part, and the total does not depend on ``t``; so minimising the within-class
variance is maximising the between-class variance

    sigma_B^2(t) = w0 w1 (mu0 - mu1)^2 = (mu_T w0 - mu)^2 / (w0 (1 - w0)),

where ``mu(t)`` is the first moment of the bins below ``t`` and ``mu_T`` the
mean of the whole image. Both are cumulative sums, so every threshold costs
O(1) after one pass over the histogram.
"""

from __future__ import annotations

import torch


def grey_histogram(image: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Counts ``float64 [bins]`` of the values of ``image`` (any shape, values
    in [0, 1]) in ``bins`` equal bins over [0, 1]; bin ``b`` holds the values
    ``v`` with ``floor(v * bins) == b`` (1.0 goes into the last bin)."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError(f"image must be a floating-point tensor in [0, 1], got "
                        f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.numel() == 0:
        raise ValueError("image is empty")
    if image.min() < 0 or image.max() > 1:
        raise ValueError(f"image values must be in [0, 1], got "
                         f"[{image.min().item():.4g}, {image.max().item():.4g}]")
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2, got {bins!r}")
    index = (image.flatten().double() * bins).long().clamp(max=bins - 1)
    return torch.bincount(index, minlength=bins).double()


def between_class_variance(histogram: torch.Tensor) -> torch.Tensor:
    """``sigma_B^2(t)`` for every threshold ``t = 0, ..., L``: ``float64 [L + 1]``.

    ``histogram`` is ``[L]`` non-negative counts (or frequencies) of the bin
    values ``0, 1, ..., L - 1``; threshold ``t`` puts bins ``< t`` in class 0.
    Thresholds that leave a class empty (``t = 0``, ``t = L``, and any other
    with no pixel on one side) get 0, not NaN.
    """
    h = torch.as_tensor(histogram).double()
    if h.ndim != 1 or len(h) < 2 or (h < 0).any() or h.sum() <= 0:
        raise ValueError("histogram must be [L >= 2] non-negative counts with a "
                         f"positive sum, got shape {list(h.shape)}")
    p = h / h.sum()
    levels = torch.arange(len(p), dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    w0 = torch.cat([zero, p.cumsum(0)])  # weight of bins < t, t = 0..L
    mu = torch.cat([zero, (p * levels).cumsum(0)])  # first moment of bins < t
    mu_total = mu[-1]
    denominator = w0 * (1 - w0)
    # An empty class: the numerator is 0 in exact arithmetic; rounding can
    # leave w0 a hair away from 0 or 1, so test emptiness on the counts.
    counts = torch.cat([zero, h.cumsum(0)])
    empty = (counts <= 0) | (counts >= counts[-1])
    sigma = (mu_total * w0 - mu) ** 2 / torch.where(empty, 1.0, denominator)
    return torch.where(empty, 0.0, sigma)


def otsu_threshold(image: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of ``image`` (values in [0, 1]), in image units.

    The image's foreground is ``image >= threshold``, which equals "bin index
    >= t" for the best ``t``: the threshold is the bin edge ``t / bins``. Ties
    (a flat maximum over empty bins between two modes) take the middle of the
    flat run, so the cut falls half-way between the modes.
    """
    sigma = between_class_variance(grey_histogram(image, bins))
    best = sigma.max()
    ties = (sigma == best).nonzero().flatten()
    # A flat maximum is one run of consecutive thresholds (the empty bins
    # between two modes); any other ties are equal by coincidence: keep the
    # first run.
    run_end = 0
    while run_end + 1 < len(ties) and ties[run_end + 1] == ties[run_end] + 1:
        run_end += 1
    t = (int(ties[0]) + int(ties[run_end]) + 1) // 2
    return t / bins
