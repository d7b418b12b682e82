"""SegNet (chapter 05): max unpooling against F.max_unpool2d and a naive loop
(ties, odd sizes), the model's shapes, parameter count, torchvision-format
weights, and the memory its decoder keeps."""

import pytest
import torch
import torch.nn.functional as F

from utils.models.segnet import max_unpool


def naive_unpool(x, indices, size):
    """Loop over every pooled value and write it at its flat index."""
    B, C, h, w = x.shape
    out = torch.zeros(B, C, size[0] * size[1])
    for b in range(B):
        for c in range(C):
            for i in range(h):
                for j in range(w):
                    out[b, c, indices[b, c, i, j]] = x[b, c, i, j]
    return out.view(B, C, *size)


@pytest.mark.parametrize("size, ceil", [((6, 8), False), ((5, 7), True),
                                        ((5, 7), False), ((1, 1), True),
                                        ((9, 4), True)])
def test_unpool_equals_max_unpool2d_and_a_loop(size, ceil):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g)
    pooled, indices = F.max_pool2d(x, 2, ceil_mode=ceil, return_indices=True)
    values = torch.randn(pooled.shape, generator=g)  # a decoder's, not the maxima
    got = max_unpool(values, indices, size)
    assert torch.equal(got, F.max_unpool2d(values, indices, 2, output_size=size))
    assert torch.equal(got, naive_unpool(values, indices, size))
    # unpooling positive maxima and pooling again gives them back
    positive, indices = F.max_pool2d(x.abs() + 0.1, 2, ceil_mode=ceil,
                                     return_indices=True)
    again = F.max_pool2d(max_unpool(positive, indices, size), 2, ceil_mode=ceil)
    assert torch.equal(again, positive)


def test_ties_keep_the_first_maximum_of_each_window():
    """torch's max-pool records the first maximum in the window's row-major
    order; unpooling then puts the value there and zeros at the other tied
    positions."""
    x = torch.tensor([[[[1.0, 1.0, 0.0, 2.0],
                        [1.0, 1.0, 2.0, 2.0]]]])
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    assert indices.tolist() == [[[[0, 3]]]]
    got = max_unpool(pooled, indices, (2, 4))
    assert got.tolist() == [[[[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]]]
    g = torch.Generator().manual_seed(1)
    ties = torch.randint(0, 2, (2, 4, 8, 6), generator=g).float()
    pooled, indices = F.max_pool2d(ties, 2, return_indices=True)
    got = max_unpool(pooled, indices, (8, 6))
    assert torch.equal(got, F.max_unpool2d(pooled, indices, 2, output_size=(8, 6)))
    # one non-zero per window at most, even where the window had four ones
    per_window = F.avg_pool2d((got != 0).float(), 2) * 4
    assert per_window.max() == 1


def test_the_output_size_is_needed_for_odd_sides():
    x = torch.rand(1, 1, 5, 5) + 0.1
    pooled, indices = F.max_pool2d(x, 2, ceil_mode=True, return_indices=True)
    assert pooled.shape[-2:] == (3, 3)  # like a 6x6 map's
    right = max_unpool(pooled, indices, (5, 5))
    assert torch.equal(F.max_pool2d(right, 2, ceil_mode=True), pooled)
    # read as a 6-wide map, the same flat indices land on other pixels
    wrong = max_unpool(pooled, indices, (6, 6))[..., :5, :5]
    assert not torch.equal(wrong, right)
    with pytest.raises(ValueError, match="output_size"):
        max_unpool(pooled, indices, (2, 2))
    with pytest.raises(ValueError, match="int64"):
        max_unpool(pooled, indices.int(), (5, 5))
