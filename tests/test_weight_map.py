"""U-Net's border weight map (chapter 04) on hand-made cells, against a
brute-force distance computation over every pair of pixels."""

import math

import pytest
import torch

from utils.data.cells import Cells, CellsConfig
from utils.losses import pixel_weighted_cross_entropy
from utils.losses.weight_map import (
    border_weights,
    instance_distances,
    separation_target,
    unet_weight_map,
    with_separation_target,
)
from utils.metrics.instances import connected_components


def brute_force_distances(instances):
    """[H][W] lists of the sorted distances to each object: for every pixel
    and every object, the smallest distance to any of the object's pixels."""
    H, W = instances.shape
    ids = sorted(set(instances.flatten().tolist()) - {0})
    pixels = {k: [(y, x) for y in range(H) for x in range(W)
                  if instances[y, x] == k] for k in ids}
    return [[sorted(min(math.hypot(y - a, x - b) for a, b in pixels[k]) for k in ids)
             for x in range(W)] for y in range(H)]


def two_cells():
    """Two cells with a gap of two background pixels between them."""
    inst = torch.zeros(12, 16, dtype=torch.long)
    inst[2:9, 1:6] = 1
    inst[3:11, 8:14] = 2
    inst[3, 5] = 0  # a notch, so that the outline is not a plain rectangle
    return inst


def test_distances_match_brute_force():
    inst = two_cells()
    inst[11, 0] = 3  # a third, one-pixel cell
    got = instance_distances(inst, 3)
    expected = brute_force_distances(inst)
    for y in range(inst.shape[0]):
        for x in range(inst.shape[1]):
            torch.testing.assert_close(got[:, y, x], torch.tensor(expected[y][x]))
    assert torch.isinf(instance_distances(inst, 4)[3]).all()  # no 4th cell


def test_border_term_on_the_two_cell_example():
    inst = two_cells()
    w = border_weights(inst, w0=10.0, sigma=5.0)
    dist = brute_force_distances(inst)
    for y in range(inst.shape[0]):
        for x in range(inst.shape[1]):
            d1, d2 = dist[y][x]
            expected = 0.0 if inst[y, x] else 10 * math.exp(-(d1 + d2) ** 2 / 50)
            assert w[y, x].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # in the gap (columns 6 and 7) next to both cells, d1 + d2 = 1 + 2 = 3
    assert w[5, 6].item() == pytest.approx(10 * math.exp(-9 / 50), rel=1e-6)
    # the gap's pixels weigh more than any pixel far from the pair
    assert w[5, 6:8].min() > w[0, 0] and w[11, 15] < 1
    single = torch.zeros(6, 6, dtype=torch.long)
    single[2:4, 2:4] = 1
    assert border_weights(single).abs().sum() == 0  # no second cell


def test_separation_target_clears_both_sides_of_a_contact():
    inst = torch.zeros(6, 8, dtype=torch.long)
    inst[1:5, 1:4] = 1
    inst[1:5, 4:7] = 2  # touching along columns 3 | 4
    inst[5, 7] = 3  # diagonal neighbour of cell 2 at (4, 6)
    target = separation_target(inst, ignore=inst == 3)
    assert target[1:5, 3:5].eq(0).all()  # the border, both sides
    assert target[1:5, 1:3].eq(1).all() and target[1:5, 5].eq(1).all()
    assert target[4, 6] == 0 and target[5, 7] == 255
    assert target[0].eq(0).all()


def test_weight_map_adds_class_balance_and_matches_the_formula():
    inst = two_cells()
    target = separation_target(inst)
    target[0, 0] = 255
    w = unet_weight_map(target)
    valid = target != 255
    n = valid.sum().item()
    n_fg = (target == 1).sum().item()
    w_c = torch.where(target == 1, n / (2 * n_fg), n / (2 * (n - n_fg)))
    # the objects the map finds are the connected components of class 1
    expected = torch.where(valid, w_c + border_weights(inst), 0.0)
    torch.testing.assert_close(w, expected)
    assert w[0, 0] == 0
    batch = unet_weight_map(torch.stack([target, target]))
    torch.testing.assert_close(batch[1], w)
    logits = torch.randn(1, 2, *target.shape)
    loss = pixel_weighted_cross_entropy(logits, target[None], w[None])
    assert torch.isfinite(loss)


def test_weight_map_rejects_non_binary_targets():
    with pytest.raises(ValueError, match="binary"):
        unet_weight_map(torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="integer"):
        unet_weight_map(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="instances"):
        instance_distances(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="panoptic"):
        with_separation_target(torch.zeros(3, 2, 2),
                               torch.zeros(2, 2, dtype=torch.long))


def test_separation_target_from_a_panoptic_cells_sample():
    cells = Cells("val", 2, CellsConfig(image_size=48), task="panoptic")
    image, panoptic = cells[0]
    _, target = with_separation_target(image, panoptic)
    assert target.dtype == torch.int64 and target.shape == (48, 48)
    assert set(target.unique().tolist()) <= {0, 1, 255}
    # no two cells touch any more: each 4-connected component of the
    # foreground lies inside one true cell
    inst = panoptic[..., 1]
    components = connected_components(target == 1)
    assert components.max() >= 2
    for k in range(1, int(components.max()) + 1):
        assert inst[components == k].unique().numel() == 1
