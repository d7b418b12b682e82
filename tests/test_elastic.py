"""U-Net's elastic deformation (chapter 04): labels stay valid, image and
target move together, the field is smooth and as large as asked."""

import pytest
import torch

from utils.data.shapes import Shapes, ShapesConfig
from utils.data.transforms import ElasticDeformation


def ramps(H, W):
    """An image whose first two channels are the pixel's row and column
    (scaled into [0, 1]), and a label map holding each pixel's index."""
    rows = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    cols = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    image = torch.stack([rows / (H - 1), cols / (W - 1), torch.zeros(H, W)])
    labels = (rows * W + cols).long()
    return image, labels


def test_image_and_labels_move_together():
    """Inside the image, bilinear sampling of a ramp gives the exact source
    position; the label's pixel must be that position rounded."""
    torch.manual_seed(0)
    H, W = 40, 56
    image, labels = ramps(H, W)
    t = ElasticDeformation(grid=3, sigma=4.0)
    field = t.displacement(H, W)
    out_image, out_labels = t.warp(image, labels, field)
    src_y = torch.arange(H)[:, None] + field[0]
    src_x = torch.arange(W)[None, :] + field[1]
    inside = (src_y >= 0) & (src_y <= H - 1) & (src_x >= 0) & (src_x <= W - 1)
    assert inside.float().mean() > 0.5 and (~inside).any()
    torch.testing.assert_close(out_image[0][inside] * (H - 1), src_y[inside],
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(out_image[1][inside] * (W - 1), src_x[inside],
                               atol=1e-3, rtol=0)
    # labels: the nearest pixel (ties at exactly .5 aside)
    clear = inside & ((src_y.frac().abs() - 0.5).abs() > 1e-3) & \
        ((src_x.frac().abs() - 0.5).abs() > 1e-3)
    nearest = torch.round(src_y).long() * W + torch.round(src_x).long()
    assert torch.equal(out_labels[clear], nearest[clear])
    # where the nearest pixel is outside, the label is ignore
    outside = (torch.round(src_y) < 0) | (torch.round(src_y) > H - 1) | \
        (torch.round(src_x) < 0) | (torch.round(src_x) > W - 1)
    assert (out_labels[outside] == 255).all() and outside.any()
    assert (out_labels[~outside] != 255).all()


def test_labels_stay_valid_class_ids_and_ignore_stays_ignore():
    torch.manual_seed(1)
    data = Shapes("train", 4, ShapesConfig(image_size=48, ignore_border=1),
                  task="semantic")
    t = ElasticDeformation(grid=3, sigma=6.0)
    for image, target in data:
        assert (target == 255).any()  # the ignore band
        out_image, out = t(image, target)
        assert out.dtype == torch.int64 and out.shape == target.shape
        assert set(out.unique().tolist()) <= set(target.unique().tolist()) | {255}
        assert out_image.dtype == torch.float32 and out_image.shape == image.shape
        assert out_image.min() >= 0 and out_image.max() <= 1


def test_every_target_kind_moves_alike():
    torch.manual_seed(2)
    data = Shapes("train", 1, ShapesConfig(image_size=48, min_objects=3), task="all")
    image, target = data[0]
    t = ElasticDeformation(grid=4, sigma=5.0)
    field = t.displacement(48, 48)
    _, out = t.warp(image, target, field)
    _, semantic = t.warp(image, target["semantic"], field)
    assert torch.equal(out["semantic"], semantic)
    assert torch.equal(out["panoptic"][..., 0], semantic)  # no ignore band here
    # each kept mask is the moved instance channel of the panoptic map
    moved_ids = out["panoptic"][..., 1]
    assert len(out["masks"]) == len(out["labels"]) == len(out["boxes"])
    for mask in out["masks"]:
        ids = moved_ids[mask.bool()].unique()
        assert ids.numel() == 1 and ids.item() > 0


def test_the_field_is_smooth_and_has_the_asked_size():
    torch.manual_seed(3)
    t = ElasticDeformation(grid=3, sigma=10.0)
    fields = torch.stack([t.displacement(64, 64) for _ in range(200)])
    corners = fields[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # lattice points
    assert 8.5 < corners.std().item() < 11.5
    # neighbouring pixels move almost alike: the field is smooth
    step = (fields[..., 1:, :] - fields[..., :-1, :]).abs().max()
    assert step < 0.1 * fields.abs().max()


def test_identity_field_and_probability():
    image, labels = ramps(9, 7)
    t = ElasticDeformation(sigma=0.0)
    out_image, out_labels = t(image, labels)
    torch.testing.assert_close(out_image, image)
    assert torch.equal(out_labels, labels)
    never = ElasticDeformation(sigma=5.0, p=0.0)
    assert never(image, labels)[1] is labels
    with pytest.raises(ValueError, match="grid"):
        ElasticDeformation(grid=1)
    with pytest.raises(ValueError, match="sigma"):
        ElasticDeformation(sigma=-1.0)
