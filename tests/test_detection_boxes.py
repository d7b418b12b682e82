"""Box geometry (utils.models.detection.boxes) against hand-computed cases and
an explicit per-pair loop."""

import math

import pytest
import torch

from utils.models.detection import (
    box_area,
    box_iou,
    clip_boxes_to_image,
    masks_to_boxes,
    remove_small_boxes,
)


def naive_iou(a, b):
    """IoU of two boxes given as Python sequences, from the definition."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else math.nan


def test_box_area_hand_computed():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0],
                          [2.0, 2.0, 1.0, 4.0]])
    assert box_area(boxes).tolist() == [6.0, 0.0, -2.0]  # inverted: negative, unclamped


def test_box_area_upcasts_small_types():
    area = box_area(torch.tensor([[0, 0, 200, 200]], dtype=torch.int16))
    assert area.tolist() == [40000]  # int16 would overflow
    assert box_area(torch.tensor([[0, 0, 300, 300]], dtype=torch.float16)).dtype \
        == torch.float32


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0],   # 1 / (4 + 4 - 1)
                      [2.0, 0.0, 4.0, 2.0],   # touching edge: 0
                      [0.0, 0.0, 2.0, 2.0],   # identical: 1
                      [0.5, 0.5, 1.5, 1.5]])  # inside: 1 / 4
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0, 0.25]]))


def test_box_iou_zero_area_boxes():
    """Two zero-area boxes: 0 / 0 = nan (torchvision's value); a zero-area box
    against a real one: 0."""
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 1.0, 4.0, 1.0]])
    real = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert torch.isnan(box_iou(point, point)).all()
    assert torch.isnan(box_iou(point, line)).all()
    assert box_iou(point, real).item() == 0.0
    assert box_iou(line, real).item() == 0.0


def test_box_iou_against_pairwise_loop():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g, dtype=torch.float64) * 20
    wh = torch.rand(30, 2, generator=g, dtype=torch.float64) * 10
    boxes = torch.cat([xy, xy + wh], 1)
    a, b = boxes[:12], boxes[12:]
    expected = torch.tensor([[naive_iou(p, q) for q in b.tolist()] for p in a.tolist()],
                            dtype=torch.float64)
    assert torch.allclose(box_iou(a, b), expected, rtol=0, atol=1e-12)
    assert box_iou(a, b).shape == (12, 18)
    assert box_iou(a[:0], b).shape == (0, 18)


def test_clip_boxes_to_image_bounds_are_width_and_height():
    boxes = torch.tensor([[-5.0, -1.0, 130.0, 50.0], [10.0, 90.0, 20.0, 120.0]])
    clipped = clip_boxes_to_image(boxes, (100, 120))  # (height, width)
    assert clipped.tolist() == [[0.0, 0.0, 120.0, 50.0], [10.0, 90.0, 20.0, 100.0]]


def test_remove_small_boxes_keeps_sides_at_least_min_size():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 1.9, 5.0],
                          [0.0, 0.0, 5.0, 1.0], [1.0, 1.0, 4.0, 4.0]])
    assert remove_small_boxes(boxes, 2.0).tolist() == [0, 3]
    assert remove_small_boxes(boxes[:0], 2.0).tolist() == []


def test_masks_to_boxes_uses_last_index_not_plus_one():
    masks = torch.zeros(3, 6, 8, dtype=torch.uint8)
    masks[0, 1:4, 2:7] = 1  # rows 1..3, columns 2..6
    masks[1, 5, 0] = 1      # a single pixel: degenerate box
    # masks[2] is empty
    assert masks_to_boxes(masks).tolist() == [[2.0, 1.0, 6.0, 3.0],
                                              [0.0, 5.0, 0.0, 5.0],
                                              [0.0, 0.0, 0.0, 0.0]]
    assert masks_to_boxes(masks).dtype == torch.float32
    assert masks_to_boxes(torch.zeros(0, 6, 8)).shape == (0, 4)


def test_masks_to_boxes_against_loop():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(10, 13, 17, generator=g) > 0.9
    for mask, box in zip(masks, masks_to_boxes(masks)):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item(),
                                ys.max().item()]


@pytest.mark.parametrize("fn", [box_area, lambda b: box_iou(b, b),
                                lambda b: clip_boxes_to_image(b, (4, 4)),
                                lambda b: remove_small_boxes(b, 1.0)])
def test_bad_box_shape_is_named(fn):
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        fn(torch.zeros(3, 5))


def test_masks_to_boxes_bad_shape():
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        masks_to_boxes(torch.zeros(4, 4))
