"""Connected components and instance matching (chapters 04 and 10), against a
breadth-first flood fill and hand-made cases."""

from collections import deque

import pytest
import torch

from utils.metrics.instances import (
    connected_components,
    grow_labels,
    instance_scores,
    match_instances,
    overlap_matrix,
    remove_small,
)


def flood_fill(mask, connectivity):
    """Breadth-first labelling in raster order: the reference."""
    H, W = len(mask), len(mask[0])
    labels = [[0] * W for _ in range(H)]
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    n = 0
    for y in range(H):
        for x in range(W):
            if mask[y][x] and not labels[y][x]:
                n += 1
                labels[y][x] = n
                queue = deque([(y, x)])
                while queue:
                    a, b = queue.popleft()
                    for dy, dx in steps:
                        u, v = a + dy, b + dx
                        inside = 0 <= u < H and 0 <= v < W
                        if inside and mask[u][v] and not labels[u][v]:
                            labels[u][v] = n
                            queue.append((u, v))
    return torch.tensor(labels)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_match_a_flood_fill(connectivity):
    g = torch.Generator().manual_seed(0)
    for density in (0.2, 0.45, 0.6, 0.9):
        mask = torch.rand(19, 23, generator=g) < density
        expected = flood_fill(mask.tolist(), connectivity)
        assert torch.equal(connected_components(mask, connectivity), expected)
    batch = torch.rand(3, 11, 13, generator=g) < 0.55
    got = connected_components(batch.to(torch.uint8), connectivity)
    for b in range(3):
        assert torch.equal(got[b], flood_fill(batch[b].tolist(), connectivity))


def test_connectivity_of_a_diagonal_and_a_serpentine():
    diagonal = torch.eye(5, dtype=torch.bool)
    assert connected_components(diagonal, 4).max() == 5
    assert connected_components(diagonal, 8).max() == 1
    snake = torch.zeros(21, 21, dtype=torch.bool)  # one long winding path
    snake[::2] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    labels = connected_components(snake)
    assert labels.max() == 1 and torch.equal(labels > 0, snake)
    assert connected_components(torch.zeros(4, 4, dtype=torch.bool)).sum() == 0


def test_connected_components_reject_bad_input():
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(torch.ones(3, 3, dtype=torch.bool), 6)
    with pytest.raises(ValueError, match="bool or integer"):
        connected_components(torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        connected_components(torch.ones(3, dtype=torch.bool))


def test_overlap_matrix_counts_pairs():
    pred = torch.tensor([[1, 1, 0], [7, 7, 7]])
    true = torch.tensor([[2, 0, 0], [2, 2, 5]])
    pred_ids, true_ids, inter, pa, ta = overlap_matrix(pred, true)
    assert pred_ids.tolist() == [1, 7] and true_ids.tolist() == [2, 5]
    assert inter.tolist() == [[1, 0], [2, 1]]
    assert pa.tolist() == [2, 3] and ta.tolist() == [3, 1]
    ignore = torch.tensor([[False, False, False], [True, False, False]])
    assert overlap_matrix(pred, true, ignore)[2].tolist() == [[1, 0], [1, 1]]


def test_matching_merges_splits_and_f1_on_a_hand_made_case():
    true = torch.zeros(10, 20, dtype=torch.long)
    true[1:5, 1:5] = 1  # found exactly
    true[1:5, 6:10] = 2  # merged with 3 into one prediction
    true[1:5, 10:14] = 3
    true[6:10, 1:11] = 4  # split in two
    true[6:9, 15:18] = 5  # missed
    pred = torch.zeros_like(true)
    pred[1:5, 1:5] = 10
    pred[1:5, 6:14] = 20
    pred[6:10, 1:6] = 30
    pred[6:10, 6:11] = 31
    pred[0, 17:20] = 40  # a false alarm
    r = match_instances(pred, true)
    assert r["matches"] == [(10, 1, 1.0)]
    assert (r["tp"], r["fp"], r["fn"]) == (1, 4, 4)
    assert (r["merged"], r["split"]) == (2, 1)
    assert r["f1"] == pytest.approx(2 / (2 + 4 + 4))
    assert r["precision"] == r["recall"] == pytest.approx(1 / 5)
    perfect = match_instances(true * 3, true)  # ids need not agree
    assert perfect["f1"] == 1.0 and perfect["merged"] == perfect["split"] == 0
    empty = match_instances(torch.zeros_like(true), torch.zeros_like(true))
    assert empty["f1"] == 1.0 and empty["num_true"] == 0


def test_iou_at_one_half_is_not_a_match():
    true = torch.zeros(1, 4, dtype=torch.long)
    true[0, :2] = 1
    pred = torch.zeros_like(true)
    pred[0, 1:3] = 1  # IoU 1/3
    assert match_instances(pred, true)["tp"] == 0
    pred[0, :] = 1  # IoU exactly 0.5: not > 0.5
    assert match_instances(pred, true)["tp"] == 0
    with pytest.raises(ValueError, match="unique"):
        match_instances(pred, true, iou_threshold=0.3)


def test_scores_pool_counts_over_images():
    a = torch.tensor([[1, 1, 0, 2]])
    b = torch.tensor([[1, 1, 0, 0]])
    r = instance_scores([a, b], [a, a])
    assert (r["tp"], r["fp"], r["fn"]) == (3, 0, 1)
    assert r["f1"] == pytest.approx(6 / 7)
    with pytest.raises(ValueError, match="2 predicted maps but 1"):
        instance_scores([a, b], [a])
    with pytest.raises(ValueError, match="one shape"):
        match_instances(a, b[:, :3])


def test_remove_small_and_grow_labels():
    objects = torch.zeros(7, 9, dtype=torch.long)
    objects[1:4, 1:4] = 3  # 9 pixels
    objects[5, 8] = 4  # a speck
    objects[1:3, 5:7] = 9  # 4 pixels, two columns right of object 3
    kept = remove_small(objects, 4)
    assert kept.unique().tolist() == [0, 3, 9]
    assert remove_small(objects[None], 5)[0].unique().tolist() == [0, 3]
    grown = grow_labels(kept)
    expected = torch.zeros_like(kept)
    expected[0:5, 0:5] = 3  # each object gains its 8-neighbourhood ring
    expected[0:4, 4:8] = 9  # column 4 is reached by both: the larger id wins
    expected[kept > 0] = kept[kept > 0]
    assert torch.equal(grown, expected)
    assert torch.equal(grow_labels(kept[None], 2)[0], grow_labels(grown))
    with pytest.raises(ValueError, match="integer"):
        grow_labels(kept.float())
