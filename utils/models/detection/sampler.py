"""Balanced sampling of positive and negative examples (chapter 08).

Ren et al., "Faster R-CNN", NeurIPS 2015, https://arxiv.org/abs/1506.01497
(section 3.1.3): of the thousands of anchors in an image almost all are
background; the RPN's loss uses a random mini-batch of 256 with up to half
positives, padded with negatives. The box head samples 512 proposals with up
to a quarter positives.

Semantics are torchvision's ``BalancedPositiveNegativeSampler``, including its
random-number use: per image, one ``torch.randperm`` over the positives, then
one over the negatives, on the default generator; the same seed therefore
selects the same examples as torchvision.
"""

from __future__ import annotations

import torch


class BalancedPositiveNegativeSampler:
    """Draw ``batch_size_per_image`` examples with at most
    ``int(batch_size_per_image * positive_fraction)`` positives.

    Called with a list (one per image) of ``int [N_i]`` labels (``>= 1``
    positive, ``0`` negative, ``-1`` ignored), returns two lists of ``uint8
    [N_i]`` masks: the sampled positives and the sampled negatives.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, matched_idxs: list[torch.Tensor]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pos_idx, neg_idx = [], []
        for labels in matched_idxs:
            positive = torch.where(labels >= 1)[0]
            negative = torch.where(labels == 0)[0]
            num_pos = int(self.batch_size_per_image * self.positive_fraction)
            num_pos = min(positive.numel(), num_pos)  # not enough positives
            num_neg = self.batch_size_per_image - num_pos
            num_neg = min(negative.numel(), num_neg)  # not enough negatives

            perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
            perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]

            pos_mask = torch.zeros_like(labels, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
            pos_mask.index_fill_(0, positive.index_select(0, perm1), 1)
            neg_mask.index_fill_(0, negative.index_select(0, perm2), 1)
            pos_idx.append(pos_mask)
            neg_idx.append(neg_mask)
        return pos_idx, neg_idx
