"""NMS (utils.models.detection.nms) against a naive greedy loop written from the
definition, and hand-made cases: ties, zero-area boxes, the threshold's edge."""

import numpy as np
import pytest
import torch

from utils.models.detection import batched_nms, nms


def naive_nms(boxes, scores, iou_threshold):
    """Greedy NMS, one box at a time. Boxes are visited by decreasing score, ties
    by increasing index; a box is dropped when its IoU with a kept box is
    > iou_threshold. The IoU is computed in float32 as the kernel does (NumPy
    float32 scalars, one pair at a time) and compared with the threshold in
    double precision."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    x1, y1, x2, y2 = boxes.numpy().astype(np.float32).T
    areas = (x2 - x1) * (y2 - y1)
    zero = np.float32(0)
    keep = []
    for i in order:
        suppressed = False
        for k in keep:
            w = max(zero, min(x2[i], x2[k]) - max(x1[i], x1[k]))
            h = max(zero, min(y2[i], y2[k]) - max(y1[i], y1[k]))
            inter = w * h
            with np.errstate(invalid="ignore"):  # 0 / 0 for zero-area boxes
                iou = inter / (areas[k] + areas[i] - inter)
            if float(iou) > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)


def random_boxes(n, g, extent=100.0, size=30.0):
    xy = torch.rand(n, 2, generator=g) * extent
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * size], 1)


@pytest.mark.parametrize("seed", range(6))
def test_nms_matches_naive_loop_on_random_boxes(seed):
    g = torch.Generator().manual_seed(seed)
    n = [5, 40, 120, 200, 270, 300][seed]
    boxes = random_boxes(n, g)
    scores = torch.rand(n, generator=g)
    if seed % 2:
        scores = torch.randint(0, 4, (n,), generator=g).float()  # many ties
    for threshold in (0.1, 0.5, 0.7):
        assert torch.equal(nms(boxes, scores, threshold),
                           naive_nms(boxes, scores, threshold)), threshold


def test_nms_ties_keep_index_order():
    """Equal scores: the lower index is visited first and wins."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0],
                          [0.0, 1.0, 10.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]
    assert nms(boxes.flip(0), scores, 0.5).tolist() == [0, 1]  # box 3 is now index 0


def test_nms_output_in_decreasing_score_order():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0],
                          [9.0, 9.0, 10.0, 10.0]])
    assert nms(boxes, torch.tensor([0.1, 0.9, 0.5]), 0.5).tolist() == [1, 2, 0]


def test_nms_threshold_is_strict():
    """IoU exactly equal to the threshold is kept; just above is suppressed."""
    a = [0.0, 0.0, 4.0, 4.0]
    b = [2.0, 0.0, 6.0, 4.0]  # with a: inter 8, union 24, IoU 1/3
    c = [0.0, 0.0, 4.0, 1.0]  # inside a: inter 4, union 16, IoU exactly 0.25
    scores = torch.tensor([1.0, 0.5])
    assert nms(torch.tensor([a, c]), scores, 0.25).tolist() == [0, 1]
    assert nms(torch.tensor([a, c]), scores, 0.2499).tolist() == [0]
    assert nms(torch.tensor([a, b]), scores, 0.3).tolist() == [0]
    assert nms(torch.tensor([a, b]), scores, 0.34).tolist() == [0, 1]


def test_nms_compares_against_the_threshold_in_double_precision():
    """float32(0.3) > 0.3: an IoU equal to float32(0.3) is above 0.3 and must be
    suppressed, as by torchvision's kernel (float > double)."""
    iou32 = torch.tensor(0.3, dtype=torch.float32)
    assert iou32.item() > 0.3
    # Box b inside a (unit height), IoU = width_b / width_a = float32(0.3) * 10 / 10.
    width = (iou32 * 10).item()
    boxes = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, width, 1.0]])
    x = torch.tensor(width, dtype=torch.float32) / 10  # the IoU as computed
    assert x.item() > 0.3
    assert nms(boxes, torch.tensor([1.0, 0.5]), 0.3).tolist() == [0]


def test_nms_zero_area_boxes_suppress_nothing():
    """Two identical zero-area boxes: IoU 0/0 = nan, nan > t is false, both kept."""
    boxes = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0],
                          [0.0, 0.0, 2.0, 2.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1, 2]


def test_nms_empty_input():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)
    no_idxs = torch.zeros(0, dtype=torch.int64)
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), no_idxs, 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_nms_across_several_blocks():
    """More boxes than one block of rows (256), with long suppression chains."""
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(600, g, extent=60.0, size=25.0)
    scores = torch.rand(600, generator=g)
    assert torch.equal(nms(boxes, scores, 0.4), naive_nms(boxes, scores, 0.4))


def naive_batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS per category, then all kept boxes by decreasing score (ties: index)."""
    kept = []
    for c in idxs.unique().tolist():
        members = torch.where(idxs == c)[0]
        keep = naive_nms(boxes[members], scores[members], iou_threshold)
        kept += members[keep].tolist()
    return torch.tensor(sorted(kept, key=lambda i: (-float(scores[i]), i)),
                        dtype=torch.int64)


@pytest.mark.parametrize("n", [60, 1200])  # both of torchvision's code paths
def test_batched_nms_never_suppresses_across_categories(n):
    g = torch.Generator().manual_seed(n)
    boxes = random_boxes(n, g, extent=50.0)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 3, (n,), generator=g)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5),
                       naive_batched_nms(boxes, scores, idxs, 0.5))
    same = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 2)
    assert batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]),
                       0.5).tolist() == [0, 1]


def test_nms_bad_input_is_named():
    with pytest.raises(ValueError, match=r"boxes must be a tensor \[N, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"scores must be a tensor \[3\]"):
        nms(torch.zeros(3, 4), torch.zeros(4), 0.5)
    with pytest.raises(TypeError, match="floating point"):
        nms(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), 0.5)
