"""Anchors (utils.models.detection.anchors): cell anchors by hand, count,
centres and order on known feature-map sizes."""

import math

import pytest
import torch

from utils.models.detection import AnchorGenerator, ImageList


def test_cell_anchors_by_hand():
    """Size 32: ratio h/w = 0.5 gives w = 32 / sqrt(0.5) = 45.25, h = 22.63, so
    half sides 22.63 and 11.31, rounded to 23 and 11."""
    cell = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),)).cell_anchors[0]
    assert cell.tolist() == [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0],
                             [-11.0, -23.0, 11.0, 23.0]]


def test_cell_anchor_order_ratios_slowest_sizes_fastest():
    cell = AnchorGenerator(((10, 20),), ((1.0, 4.0),)).cell_anchors[0]
    widths = (cell[:, 2] - cell[:, 0]).tolist()
    heights = (cell[:, 3] - cell[:, 1]).tolist()
    # (ratio 1, 10), (ratio 1, 20), (ratio 4, 10), (ratio 4, 20). Ratio 4 and size
    # 10: w = 5, h = 20; the half width 2.5 rounds to 2 (torch.round: halves to
    # even), so the anchor is 4 wide.
    assert widths == [10.0, 20.0, 4.0, 10.0]
    assert heights == [10.0, 20.0, 20.0, 40.0]


def test_count_centres_and_order_on_known_feature_maps():
    """A 64 x 96 image with maps of stride 8 (8 x 12) and 16 (4 x 6)."""
    generator = AnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2)
    images = ImageList(torch.zeros(2, 3, 64, 96), [(64, 96), (60, 90)])
    feats = [torch.zeros(2, 8, 8, 12), torch.zeros(2, 8, 4, 6)]
    anchors = generator(images, feats)
    assert len(anchors) == 2 and torch.equal(anchors[0], anchors[1])
    assert anchors[0] is not anchors[1]
    assert anchors[0].shape == ((8 * 12 + 4 * 6) * 3, 4)
    assert generator.num_anchors_per_location() == [3, 3]
    centres = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2
    for level, (H, W, stride) in enumerate([(8, 12, 8), (4, 6, 16)]):
        offset = 0 if level == 0 else 8 * 12 * 3
        for y in range(H):
            for x in range(W):
                for a in range(3):
                    row = offset + (y * W + x) * 3 + a
                    assert centres[row].tolist() == [x * stride, y * stride]
                    assert torch.equal(anchors[0][row] - torch.tensor(
                        [x * stride, y * stride] * 2, dtype=torch.float32),
                        generator.cell_anchors[level][a])


def test_strides_are_integer_division_of_image_by_feature_size():
    generator = AnchorGenerator(((16,),), ((1.0,),))
    anchors = generator(ImageList(torch.zeros(1, 3, 100, 50), [(100, 50)]),
                        [torch.zeros(1, 1, 13, 7)])[0]
    # strides 100 // 13 = 7 and 50 // 7 = 7: last centre at (6 * 7, 12 * 7)
    last = anchors[-1]
    assert ((last[:2] + last[2:]) / 2).tolist() == [6 * 7, 12 * 7]


def test_dtype_follows_the_feature_maps():
    generator = AnchorGenerator(((32,),), ((1.0,),))
    anchors = generator(ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)]),
                        [torch.zeros(1, 1, 4, 4, dtype=torch.float64)])[0]
    assert anchors.dtype == torch.float64


def test_mismatched_levels_are_named():
    generator = AnchorGenerator(((32,), (64,)), ((1.0,),) * 2)
    with pytest.raises(ValueError, match="1 feature maps but anchors for 2"):
        generator(ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)]),
                  [torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="aspect ratios"):
        AnchorGenerator(((32,), (64,)), ((1.0,),) * 3)


def test_anchor_areas_are_about_size_squared():
    cell = AnchorGenerator(((128, 256, 512),), ((0.5, 1.0, 2.0),)).cell_anchors[0]
    areas = (cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1])
    sizes = torch.tensor([128.0, 256.0, 512.0]).repeat(3)
    assert torch.allclose(areas.sqrt(), sizes, rtol=0.01)
    assert math.isclose(float(areas[4]), 256.0 ** 2)
