"""The checks under chapter 08's exercises: each passes a correct answer
written here independently (loops and formulas, not the course's code),
refuses the course's own code, and refuses plausible wrong answers with a
message that names the mistake."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_detection_roi_align import naive_bilinear

from utils.checks import ch08
from utils.checks.common import CheckFailed
from utils.models.detection.anchors import AnchorGenerator
from utils.models.detection.box_coder import encode_boxes
from utils.models.detection.mask_head import maskrcnn_loss, project_masks_on_boxes
from utils.models.detection.roi_align import roi_align

REFUSED = "this check compares with"  # the words of a refused reference


def fails(check, answer, *words):
    with pytest.raises(CheckFailed) as err:
        check(answer)
    for word in words:
        assert word in str(err.value), str(err.value)
    return str(err.value)


# --- anchors ---------------------------------------------------------------------

def anchors_by_loops(feature_size, stride, sizes, ratios, rounding=round):
    rows = []
    for y in range(feature_size[0]):
        for x in range(feature_size[1]):
            for r in ratios:
                for s in sizes:
                    w, h = s / math.sqrt(r), s * math.sqrt(r)
                    # torch.round rounds halves to even, as Python's round
                    cell = [rounding(v) for v in (-w / 2, -h / 2, w / 2, h / 2)]
                    rows.append([x * stride + cell[0], y * stride + cell[1],
                                 x * stride + cell[2], y * stride + cell[3]])
    return torch.tensor(rows, dtype=torch.float32)


def test_anchor_check(capsys):
    ch08.check_grid_anchors(anchors_by_loops)
    assert capsys.readouterr().out.startswith("✓ grid_anchors")

    def canonical(fs, stride, sizes, ratios):
        return AnchorGenerator((sizes,), (ratios,)).grid_anchors([fs], [(stride,
                                                                          stride)])[0]

    fails(ch08.check_grid_anchors, canonical, REFUSED)
    fails(ch08.check_grid_anchors,
          lambda *a: anchors_by_loops(*a, rounding=lambda v: v), "rounds")

    def sizes_slowest(fs, stride, sizes, ratios):
        a = anchors_by_loops(fs, stride, sizes, ratios)
        A = len(sizes) * len(ratios)
        if A == 1:
            return a.flip(0)
        return a.view(-1, len(ratios), len(sizes), 4).transpose(1, 2).reshape(-1, 4)

    fails(ch08.check_grid_anchors, sizes_slowest, "another order")
    fails(ch08.check_grid_anchors,
          lambda fs, st, sizes, ratios: anchors_by_loops(fs, st, sizes,
                                                         [1 / r for r in ratios]),
          "h / w")


# --- box coding ----------------------------------------------------------------

def encode_by_formula(gt, anchors, weights):
    out = []
    for (gx1, gy1, gx2, gy2), (ax1, ay1, ax2, ay2) in zip(gt.tolist(),
                                                          anchors.tolist()):
        aw, ah, gw, gh = ax2 - ax1, ay2 - ay1, gx2 - gx1, gy2 - gy1
        acx, acy, gcx, gcy = ax1 + aw / 2, ay1 + ah / 2, gx1 + gw / 2, gy1 + gh / 2
        out.append([weights[0] * (gcx - acx) / aw, weights[1] * (gcy - acy) / ah,
                    weights[2] * math.log(gw / aw), weights[3] * math.log(gh / ah)])
    return torch.tensor(out)


def test_encode_check(capsys):
    ch08.check_encode(encode_by_formula)
    assert capsys.readouterr().out.startswith("✓ encode")
    fails(ch08.check_encode,
          lambda gt, a, w: encode_boxes(gt, a, torch.tensor(w)), REFUSED)
    fails(ch08.check_encode,
          lambda gt, a, w: encode_by_formula(gt, a, (1.0, 1.0, 1.0, 1.0)),
          "weights multiply")

    def over_gt(gt, a, w):  # centres' difference in widths of the ground truth
        d = encode_by_formula(gt, a, w)
        d[:, 0] *= (a[:, 2] - a[:, 0]) / (gt[:, 2] - gt[:, 0])
        d[:, 1] *= (a[:, 3] - a[:, 1]) / (gt[:, 3] - gt[:, 1])
        return d

    fails(ch08.check_encode, over_gt, "anchor's size")
    fails(ch08.check_encode,
          lambda gt, a, w: encode_by_formula(gt + torch.tensor([0, 0, 1.0, 1.0]),
                                             a + torch.tensor([0, 0, 1.0, 1.0]), w),
          "x2 - x1 + 1")


# --- bilinear sampling ------------------------------------------------------------

def bilinear_by_loops(feature, y, x):
    """One point at a time, with the detection ops' naive RoIAlign sampler."""
    points = zip(y.tolist(), x.tolist())
    columns = [naive_bilinear(feature, yy, xx) for yy, xx in points]
    if not columns:
        return feature.new_zeros(len(feature), 0)
    return torch.stack(columns, dim=1)  # (C, N)


def test_bilinear_check(capsys):
    ch08.check_bilinear(bilinear_by_loops)
    assert capsys.readouterr().out.startswith("✓ bilinear")

    def through_roi_align(feature, y, x):
        rois = torch.stack([torch.zeros_like(x), x - 0.5, y - 0.5, x + 0.5,
                            y + 0.5], 1)
        return roi_align(feature[None], rois, 1, 1.0, 1)[:, :, 0, 0].T

    fails(ch08.check_bilinear, through_roi_align, REFUSED)

    def half_pixel(feature, y, x):  # pixel centres at i + 0.5 (grid_sample's)
        return bilinear_by_loops(F.pad(feature, (1, 1, 1, 1)), y + 0.5, x + 0.5)

    fails(ch08.check_bilinear, half_pixel, "i + 0.5")
    fails(ch08.check_bilinear, lambda f, y, x: bilinear_by_loops(f, x, y), "rows")

    def zero_padded(feature, y, x):  # no clamping: outside pixels are 0
        C, H, W = feature.shape
        padded = F.pad(feature, (1, 1, 1, 1))
        out = bilinear_by_loops(padded, y + 1, x + 1)
        outside = (y < -1) | (y > H) | (x < -1) | (x > W)
        return out.masked_fill(outside, 0.0)

    fails(ch08.check_bilinear, zero_padded, "clamps")


# --- the mask target ---------------------------------------------------------------

def mask_targets_by_sampling(gt_masks, boxes, matched_idxs, M):
    """RoIAlign written out: M x M bins per box, ceil(size / M) samples per bin
    along each axis, each sample bilinear (the loops above)."""
    out = torch.zeros(len(boxes), M, M)
    masks = gt_masks.float()
    for k, ((x1, y1, x2, y2), i) in enumerate(zip(boxes.tolist(),
                                                   matched_idxs.tolist())):
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        gh, gw = math.ceil(h / M), math.ceil(w / M)
        ys = torch.tensor([y1 + (p + (s + 0.5) / gh) * h / M for p in range(M)
                           for s in range(gh)])
        xs = torch.tensor([x1 + (p + (s + 0.5) / gw) * w / M for p in range(M)
                           for s in range(gw)])
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        v = bilinear_by_loops(masks[i][None], yy.reshape(-1), xx.reshape(-1))
        out[k] = v.view(M, gh, M, gw).mean(dim=(1, 3))
    return out


def test_mask_target_check(capsys):
    ch08.check_mask_targets(mask_targets_by_sampling)
    assert capsys.readouterr().out.startswith("✓ mask_targets")
    fails(ch08.check_mask_targets, project_masks_on_boxes, REFUSED)

    def aligned(gt_masks, boxes, idxs, M):
        rois = torch.cat([idxs[:, None].float(), boxes], 1)
        return roi_align(gt_masks[:, None].float(), rois, M, 1.0, aligned=True)[:, 0]

    fails(ch08.check_mask_targets, aligned, "aligned=False")

    def first_mask(gt_masks, boxes, idxs, M):
        return mask_targets_by_sampling(gt_masks, boxes, torch.zeros_like(idxs), M)

    fails(ch08.check_mask_targets, first_mask, "matched_idxs")

    def cropped(gt_masks, boxes, idxs, M):  # crop whole pixels, then resize
        out = []
        for (x1, y1, x2, y2), i in zip(boxes.round().long().tolist(), idxs.tolist()):
            crop = gt_masks[i, y1:y2, x1:x2].float()[None, None]
            out.append(F.interpolate(crop, size=(M, M), mode="bilinear")[0, 0])
        return torch.stack(out)

    fails(ch08.check_mask_targets, cropped, "mask_targets")


# --- the mask loss ----------------------------------------------------------------

def mask_loss_by_formula(mask_logits, mask_targets, labels):
    x = torch.stack([mask_logits[k, c] for k, c in enumerate(labels.tolist())])
    t = mask_targets
    return -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x)).mean()


def test_mask_loss_check(capsys):
    ch08.check_mask_loss(mask_loss_by_formula)
    assert capsys.readouterr().out.startswith("✓ mask_loss")

    def canonical(mask_logits, mask_targets, labels):
        return maskrcnn_loss(mask_logits, [], [], [], [])

    fails(ch08.check_mask_loss, canonical, REFUSED)
    fails(ch08.check_mask_loss,
          lambda x, t, lab: F.binary_cross_entropy_with_logits(
              x, t[:, None].expand_as(x)), "every class")
    fails(ch08.check_mask_loss,
          lambda x, t, lab: F.cross_entropy(x, (t >= 0.5).long()), "softmax")
    fails(ch08.check_mask_loss,
          lambda x, t, lab: mask_loss_by_formula(x, t, lab) * t.numel(), "sum")
    fails(ch08.check_mask_loss,
          lambda x, t, lab: mask_loss_by_formula(x, t, lab).detach(), "gradient")
