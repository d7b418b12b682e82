"""Matching: which ground-truth box each anchor or proposal should predict
(chapter 08).

Ren et al., "Faster R-CNN", NeurIPS 2015, https://arxiv.org/abs/1506.01497
(section 3.1.2): an anchor is positive if its IoU with some ground truth is
>= 0.7, or if it is the anchor of highest IoU for some ground truth (so that
every object gets an anchor even when none reaches 0.7); negative if its best
IoU is < 0.3; anchors in between are ignored. The box head of Fast/Mask R-CNN
uses 0.5 / 0.5 (no gap) and no low-quality matches.

Semantics are torchvision's ``Matcher``: the input is an ``[M, N]`` quality
matrix (ground truth x predictions), each prediction takes its best ground truth
(``max`` over dim 0: of equal IoUs the first ground truth), then

- best IoU ``< low_threshold`` -> ``BELOW_LOW_THRESHOLD = -1``;
- ``low_threshold <= IoU < high_threshold`` -> ``BETWEEN_THRESHOLDS = -2``;
- with ``allow_low_quality_matches``, every prediction that attains some ground
  truth's highest IoU (ties included) gets back its best match, whatever the
  thresholds said. (It gets its own best ground truth, which may differ from
  the ground truth whose maximum it attains: torchvision's behaviour, kept.)
"""

from __future__ import annotations

import torch


class Matcher:
    """Assign each prediction a ground-truth index or a negative label.

    Args:
        high_threshold: quality ``>=`` this is a match.
        low_threshold: quality ``<`` this is ``BELOW_LOW_THRESHOLD``; in between,
            ``BETWEEN_THRESHOLDS``.
        allow_low_quality_matches: also match the best prediction(s) of every
            ground truth (Faster R-CNN's second positive rule).

    Called with ``match_quality_matrix`` ``float [M, N]`` (``M`` ground truths,
    ``N`` predictions), returns ``int64 [N]``: a ground-truth index in
    ``[0, M - 1]``, -1 or -2.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} must be <= "
                             f"high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> torch.Tensor:
        if match_quality_matrix.ndim != 2:
            raise ValueError(f"match_quality_matrix must be [M ground truths, N "
                             f"predictions], got {list(match_quality_matrix.shape)}")
        if match_quality_matrix.numel() == 0:
            if match_quality_matrix.shape[0] == 0:
                raise ValueError("No ground-truth boxes available for one of the "
                                 "images during training")
            raise ValueError("No proposal boxes available for one of the images "
                             "during training")
        matched_vals, matches = match_quality_matrix.max(dim=0)  # (N,), (N,)
        all_matches = matches.clone() if self.allow_low_quality_matches else None

        below_low = matched_vals < self.low_threshold
        between = ((matched_vals >= self.low_threshold)
                   & (matched_vals < self.high_threshold))
        matches.masked_fill_(below_low, self.BELOW_LOW_THRESHOLD)
        matches.masked_fill_(between, self.BETWEEN_THRESHOLDS)

        if all_matches is not None:
            self.set_low_quality_matches_(matches, all_matches, match_quality_matrix)
        return matches

    def set_low_quality_matches_(self, matches: torch.Tensor, all_matches: torch.Tensor,
                                 match_quality_matrix: torch.Tensor) -> None:
        """Restore the match of every prediction that attains some ground truth's
        highest quality (ties included), in place."""
        highest_quality_foreach_gt = match_quality_matrix.max(dim=1).values  # (M,)
        attains = (match_quality_matrix == highest_quality_foreach_gt[:, None]).any(0)
        matches.copy_(torch.where(attains, all_matches, matches))  # (N,)
