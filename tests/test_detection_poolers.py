"""Multi-scale RoIAlign (utils.models.detection.poolers): FPN's level mapping by
hand, scale inference, and the pooled features against single-level RoIAlign."""

from collections import OrderedDict

import pytest
import torch

from utils.models.detection import (
    LevelMapper,
    MultiScaleRoIAlign,
    infer_scale,
    roi_align,
)


def square(side, x=0.0, y=0.0):
    return [x, y, x + side, y + side]


def test_level_mapper_follows_fpn_equation_1():
    """k = floor(4 + log2(sqrt(wh) / 224)), clamped to [2, 5]; returned minus 2."""
    mapper = LevelMapper(2, 5)
    boxes = torch.tensor([square(224), square(223.9), square(448), square(112),
                          square(111.9), square(56), square(10), square(2000),
                          [0.0, 0.0, 224.0 * 4, 224.0 / 4],  # sqrt(wh) = 224
                          [3.0, 3.0, 3.0, 3.0]])  # zero area: log2(0) = -inf -> 2
    levels = mapper([boxes[:5], boxes[5:]])
    assert levels.tolist() == [4 - 2, 3 - 2, 5 - 2, 3 - 2, 2 - 2, 2 - 2, 2 - 2, 5 - 2,
                               4 - 2, 2 - 2]
    assert levels.dtype == torch.int64


def test_level_mapper_eps_at_exact_powers_of_two():
    """sqrt(wh) = 112 exactly gives log2(0.5) = -1: level 3 exactly; the eps keeps
    floating-point error from dropping it to 2 (here with float64 boxes too)."""
    mapper = LevelMapper(2, 5)
    for dtype in (torch.float32, torch.float64):
        boxes = torch.tensor([square(112, 7.0, 3.0), square(56, 1.5, 0.25)],
                             dtype=dtype)
        assert mapper([boxes]).tolist() == [1, 0]


def test_infer_scale_rounds_to_a_power_of_two():
    assert infer_scale(torch.zeros(1, 1, 63, 80), (250, 320)) == 0.25  # 63/250 = 0.252
    assert infer_scale(torch.zeros(1, 1, 8, 10), (250, 320)) == 1 / 32
    assert infer_scale(torch.zeros(1, 1, 200, 1), (200, 300)) == 1.0  # height decides


def fpn_features(g, image_size=(256, 320), channels=3, n=2):
    H, W = image_size
    feats = OrderedDict()
    for k, name in zip(range(2, 6), ["p2", "p3", "p4", "p5"]):
        feats[name] = torch.randn(n, channels, H // 2 ** k, W // 2 ** k, generator=g)
    feats["pool"] = torch.randn(n, channels, 1, 1, generator=g)  # not pooled from
    return feats


def test_each_roi_is_pooled_from_its_level():
    g = torch.Generator().manual_seed(0)
    feats = fpn_features(g)
    image_shapes = [(256, 320), (250, 300)]
    boxes = [torch.tensor([square(20, 5, 5), square(100, 40, 30), square(230, 10, 10)]),
             torch.tensor([square(60, 100, 100), square(500, 0, 0)])]
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
    out = pooler(feats, boxes, image_shapes)
    assert out.shape == (5, 3, 7, 7)
    assert pooler.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    # By hand: sqrt(area) 20 -> k 0 + 2, 100 -> 2, 230 -> 4, 60 -> 2, 500 -> 5
    levels = [2, 2, 4, 2, 5]
    rows = [(0, b) for b in boxes[0]] + [(1, b) for b in boxes[1]]
    for i, ((image, box), level) in enumerate(zip(rows, levels)):
        roi = torch.cat([torch.tensor([float(image)]), box])[None]
        expected = roi_align(feats[f"p{level}"], roi, 7, 2.0 ** -level, 2)
        assert torch.equal(out[i:i + 1], expected), i


def test_single_level_and_output_size_pair():
    g = torch.Generator().manual_seed(1)
    feats = {"c4": torch.randn(1, 2, 16, 20, generator=g)}
    boxes = [torch.tensor([square(50, 3, 4), square(200, 10, 20)])]
    pooler = MultiScaleRoIAlign(["c4"], (5, 3), 0)
    out = pooler(feats, boxes, [(256, 320)])
    rois = torch.cat([torch.zeros(2, 1), boxes[0]], 1)
    assert torch.equal(out, roi_align(feats["c4"], rois, (5, 3), 1 / 16, 0))


def test_scales_are_kept_from_the_first_call():
    g = torch.Generator().manual_seed(2)
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
    pooler(fpn_features(g), [torch.tensor([square(30)])], [(256, 320)])
    assert pooler.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    pooler(fpn_features(g), [torch.tensor([square(30)])], [(128, 160)])  # ignored
    assert pooler.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def test_gradients_reach_every_level_used():
    g = torch.Generator().manual_seed(3)
    feats = {k: v.requires_grad_() for k, v in fpn_features(g, n=1).items()}
    boxes = [torch.tensor([square(20, 5, 5), square(500, 0, 0)])]  # levels 2 and 5
    MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)(feats, boxes,
                                                       [(256, 320)]).sum().backward()
    assert feats["p2"].grad.abs().sum() > 0 and feats["p5"].grad.abs().sum() > 0
    for unused in ("p3", "p4"):
        assert feats[unused].grad is None or feats[unused].grad.abs().sum() == 0


def test_missing_feature_maps_are_named():
    with pytest.raises(ValueError, match="none of"):
        MultiScaleRoIAlign(["p2"], 7, 2)({"x": torch.zeros(1, 1, 4, 4)},
                                         [torch.zeros(1, 4)], [(16, 16)])
