"""Boundary IoU (chapter 03) against a brute-force band and IoU."""

import pytest
import torch

from utils.metrics.boundary import boundary_band, boundary_iou, boundary_target


def naive_band(target, width, ignore=255):
    """Pixels within chessboard distance width - 1 of an edge pixel; an edge
    pixel has a 4-neighbour with another valid label."""
    H, W = target.shape
    edge = torch.zeros(H, W, dtype=torch.bool)
    for y in range(H):
        for x in range(W):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                v, u = y + dy, x + dx
                if 0 <= v < H and 0 <= u < W and target[v, u] != ignore \
                        and target[y, x] != ignore and target[v, u] != target[y, x]:
                    edge[y, x] = True
    band = torch.zeros_like(edge)
    points = edge.nonzero().tolist()
    for y in range(H):
        for x in range(W):
            if target[y, x] == ignore:
                continue
            band[y, x] = any(max(abs(y - v), abs(x - u)) <= width - 1
                             for v, u in points)
    return band


def naive_miou(pred, target, band, num_classes):
    ious = []
    for c in range(num_classes):
        p, t = (pred == c) & band, (target == c) & band
        union = (p | t).sum()
        if union > 0:
            ious.append(float((p & t).sum() / union))
    return sum(ious) / len(ious)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_band_and_iou_against_brute_force(width):
    g = torch.Generator().manual_seed(width)
    target = torch.zeros(2, 14, 17, dtype=torch.int64)
    target[:, 3:9, 4:12] = 1
    target[0, 6:13, 8:15] = 2
    target[1, 0:2, :] = 255
    target[1, 10:, 2:6] = 3
    pred = torch.randint(0, 4, (2, 14, 17), generator=g)
    pred[target == 0] = 0  # partly right, so IoUs are neither 0 nor 1
    band = boundary_band(target, width)
    for b in range(2):
        assert torch.equal(band[b], naive_band(target[b], width))
    expected = naive_miou(pred, target, band & (target != 255), 4)
    assert boundary_iou(pred, target, 4, width) == pytest.approx(expected)
    bt = boundary_target(target, width)
    assert ((bt == 255) == (~band | (target == 255))).all()


def test_band_width_and_errors():
    target = torch.zeros(1, 10, 10, dtype=torch.int64)
    target[:, :, 5:] = 1  # a vertical edge between columns 4 and 5
    band = boundary_band(target, 3)[0]
    assert band[0].nonzero().flatten().tolist() == [2, 3, 4, 5, 6, 7]  # 2 x 3 px
    assert boundary_band(target[0], 1).shape == (10, 10)  # [H, W] works too
    with pytest.raises(ValueError, match="width"):
        boundary_band(target, 0)
    with pytest.raises(ValueError, match="integer"):
        boundary_band(target.float(), 2)
    uniform = torch.zeros(1, 5, 5, dtype=torch.int64)
    assert not boundary_band(uniform, 2).any()
