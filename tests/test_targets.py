"""Targets derived from targets (utils.data.targets) and the label checks
(utils.data.contract), against naive loops written here."""

import numpy as np
import pytest
import torch

from utils.data.contract import check_labels
from utils.data.targets import (
    boxes_from_masks,
    drop_small_instances,
    edge_band,
    label_edges,
)


def naive_boxes(masks):
    out = []
    for m in masks:
        ys, xs = np.nonzero(np.asarray(m))
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs)
                   else [0, 0, 0, 0])
    return np.array(out, np.float32).reshape(-1, 4)


def test_boxes_from_masks_equal_a_loop_and_take_arrays_or_tensors():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(20, 9, 13, generator=g) > 0.93
    masks[3] = False  # an empty mask
    masks[4] = False
    masks[4, 8, 12] = True  # one pixel in the corner
    expected = naive_boxes(masks.numpy())
    assert np.array_equal(boxes_from_masks(masks).numpy(), expected)
    assert np.array_equal(boxes_from_masks(masks.numpy().astype(np.uint8)).numpy(),
                          expected)
    assert boxes_from_masks(masks).dtype == torch.float32
    assert boxes_from_masks(torch.zeros(0, 4, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        boxes_from_masks(torch.zeros(4, 4))


def naive_band(labels, width, valid):
    H, W = labels.shape
    edge = np.zeros((H, W), bool)
    for y in range(H):
        for x in range(W):
            for dy, dx in ((0, 1), (1, 0)):
                y2, x2 = y + dy, x + dx
                if y2 < H and x2 < W and valid[y, x] and valid[y2, x2] and (
                        labels[y, x] != labels[y2, x2]):
                    edge[y, x] = edge[y2, x2] = True
    band = np.zeros((H, W), bool)
    for y, x in zip(*np.nonzero(edge)):
        band[max(0, y - width + 1):y + width, max(0, x - width + 1):x + width] = True
    return band & valid


@pytest.mark.parametrize("width", [1, 2, 4])
def test_edge_band_equals_a_loop(width):
    rng = np.random.default_rng(width)
    labels = rng.integers(0, 3, (11, 14))
    labels[:, :5] = 0
    valid = rng.random((11, 14)) > 0.1
    got = edge_band(torch.from_numpy(labels), width, torch.from_numpy(valid))
    assert np.array_equal(got.numpy(), naive_band(labels, width, valid))
    all_valid = np.ones_like(valid)
    assert np.array_equal(label_edges(torch.from_numpy(labels)).numpy(),
                          naive_band(labels, 1, all_valid))
    batch = edge_band(torch.from_numpy(np.stack([labels, labels[::-1].copy()])),
                      width)
    assert np.array_equal(batch[1].numpy(), naive_band(labels[::-1], width,
                                                       all_valid))
    with pytest.raises(ValueError, match="width"):
        edge_band(torch.from_numpy(labels), 0)


def test_drop_small_instances_renumbers_in_order_and_voids_the_rest():
    m = np.array([[1, 1, 2, 0],
                  [1, 1, 3, 3],
                  [0, 4, 4, 4]], np.int32)
    out, keep, dropped = drop_small_instances(m, 5, min_visible=2)
    assert keep.tolist() == [0, 2, 3]  # instance 2 (1 px) and 5 (0 px) go
    assert out.tolist() == [[1, 1, 0, 0], [1, 1, 2, 2], [0, 3, 3, 3]]
    assert dropped.tolist() == [[False, False, True, False],
                                [False] * 4, [False] * 4]
    same, keep, dropped = drop_small_instances(m, 4, min_visible=1)
    assert same is m and keep.tolist() == [0, 1, 2, 3] and not dropped.any()


def test_check_labels_names_the_values_and_allows_ignore():
    check_labels(torch.tensor([0, 2, 255]), 3, 255)
    with pytest.raises(ValueError, match=r"has labels \[-1, 3\], expected \[0, 3\)"
                                         r" or the ignore index 255"):
        check_labels(torch.tensor([0, 3, -1, 255]), 3, 255)
    with pytest.raises(ValueError, match=r"\[255\], expected \[0, 3\)$"):
        check_labels(torch.tensor([255]), 3, None, hint="")
    with pytest.raises(ValueError, match="integer labels"):
        check_labels(torch.tensor([0.5]), 3)
