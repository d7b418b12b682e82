"""Checks for chapter 08 (Mask R-CNN).

Each compares the learner's code with the course's detection code in
:mod:`utils.models.detection` (torchvision's semantics) on fixed inputs, and
refuses that code as an answer (see :mod:`utils.checks.common`). Where a
wrong answer is a known mistake (anchors in another order, a forgotten weight,
the half-pixel offset, the mean over every class's mask), the failure names it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.checks.common import assert_close, exercise, fail, learner, ok
from utils.models.detection.anchors import AnchorGenerator
from utils.models.detection.box_coder import BoxCoder, encode_boxes
from utils.models.detection.mask_head import maskrcnn_loss, project_masks_on_boxes
from utils.models.detection.roi_align import RoIAlign, roi_align


def _close(a, b, atol=1e-5) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-5))


# --- anchors ----------------------------------------------------------------------

def _anchors(feature_size, stride, sizes, ratios, *, rounded=True, inverted=False,
             centre=0.0):
    """Anchors built the reference way, or with a known mistake."""
    s = torch.tensor(sizes, dtype=torch.float32)
    r = torch.tensor(ratios, dtype=torch.float32)
    h_ratio = torch.sqrt(r) if not inverted else 1 / torch.sqrt(r)
    ws = (s[None, :] / h_ratio[:, None]).reshape(-1)
    hs = (s[None, :] * h_ratio[:, None]).reshape(-1)
    cell = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    if rounded:
        cell = cell.round()
    H, W = feature_size
    ys, xs = torch.meshgrid(torch.arange(H) * stride + centre,
                            torch.arange(W) * stride + centre, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).float()
    return (shifts + cell[None]).reshape(-1, 4)


def _same_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same multiset of rows, in any order."""
    if not isinstance(a, torch.Tensor) or a.shape != b.shape:
        return False
    key = torch.tensor([1e9, 1e6, 1e3, 1.0], dtype=torch.float64)
    return torch.equal((a.double() @ key).sort()[0], (b.double() @ key).sort()[0])


@exercise(
    forbid=[AnchorGenerator],
    hints=[
        "first the A zero-centred 'cell anchors' (one per ratio and size), then "
        "the same cell anchors shifted to every position of the feature map",
        "the ratio is height over width and the area is the size squared, so "
        "the width is the size divided by the root of the ratio and the height "
        "the size times it; round the zero-centred boxes to whole pixels; the "
        "position in row y and column x is the image point at x and y times "
        "the stride; rows go by y, then x, then ratio, then size",
    ],
)
def check_grid_anchors(grid_anchors) -> None:
    """``grid_anchors(feature_size, stride, sizes, aspect_ratios)`` gives
    torchvision's ``float32 [H * W * A, 4]`` anchors."""
    cases = [((2, 3), 16, (32,), (0.5, 1.0, 2.0)),
             ((4, 4), 8, (16, 32), (0.5, 1.0, 2.0)),
             ((3, 5), 4, (8,), (1.0,)),
             ((2, 2), 32, (20, 45), (0.25, 1.0))]
    for feature_size, stride, sizes, ratios in cases:
        what = f"grid_anchors({feature_size}, {stride}, {sizes}, {ratios})"
        got = learner(grid_anchors, feature_size, stride, sizes, ratios, what=what)
        expected = AnchorGenerator((sizes,), (ratios,)).grid_anchors(
            [feature_size], [(stride, stride)])[0]
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got_f = got.double()
            if _close(got_f, _anchors(feature_size, stride, sizes, ratios,
                                      inverted=True)):
                hint = ("the aspect ratio is h / w: a ratio of 2 is twice as tall "
                        "as wide")
            elif _same_rows(got, expected):
                hint = ("the right anchors in another order: per position, the "
                        "ratios vary slowest and the sizes fastest; positions row "
                        "by row (y, then x)")
            elif _close(got_f, _anchors(feature_size, stride, sizes, ratios,
                                        rounded=False)):
                hint = ("torchvision rounds the zero-centred cell anchors to whole "
                        "pixels before shifting them")
            elif _close(got_f, _anchors(feature_size, stride, sizes, ratios,
                                        centre=stride / 2)):
                hint = ("the anchors sit at (x * stride, y * stride), not at the "
                        "centre of the cell")
            elif got.dtype != torch.float32 and _close(got_f, expected):
                fail(f"{what}: wrong dtype", torch.float32, got.dtype,
                     hint="boxes are float32")
        assert_close(got, expected, what, hint=hint)
    ok("grid_anchors gives torchvision's anchors, in its order, for 4 feature maps")


# --- box coding ---------------------------------------------------------------------

def _encode(gt, ref, weights, *, relative_to_gt=False, corners=False, plus_one=0.0,
            inverted=False):
    wx, wy, ww, wh = weights
    w_r, h_r = ref[:, 2] - ref[:, 0] + plus_one, ref[:, 3] - ref[:, 1] + plus_one
    w_g, h_g = gt[:, 2] - gt[:, 0] + plus_one, gt[:, 3] - gt[:, 1] + plus_one
    if corners:
        cx_r, cy_r, cx_g, cy_g = ref[:, 0], ref[:, 1], gt[:, 0], gt[:, 1]
    else:
        cx_r, cy_r = ref[:, 0] + 0.5 * w_r, ref[:, 1] + 0.5 * h_r
        cx_g, cy_g = gt[:, 0] + 0.5 * w_g, gt[:, 1] + 0.5 * h_g
    nw, nh = (w_g, h_g) if relative_to_gt else (w_r, h_r)
    dw, dh = torch.log(w_g / w_r), torch.log(h_g / h_r)
    if inverted:
        dw, dh = -dw, -dh
    return torch.stack([wx * (cx_g - cx_r) / nw, wy * (cy_g - cy_r) / nh,
                        ww * dw, wh * dh], dim=1)


def _random_boxes(n, g, size=100.0):
    xy = torch.rand(n, 2, generator=g) * size
    wh = 2 + torch.rand(n, 2, generator=g) * size / 2
    return torch.cat([xy, xy + wh], dim=1)


@exercise(
    forbid=[encode_boxes, BoxCoder],
    hints=[
        "work with centres and sizes: the x offset is the centres' difference "
        "measured in widths of the reference box, the width offset the log of "
        "the ratio of the widths",
        "the reference is the anchor (or proposal): divide by its width and "
        "height, take log(w_gt / w_anchor), then multiply each of the four "
        "numbers by its weight; widths are x2 - x1, without + 1",
    ],
)
def check_encode(encode) -> None:
    """``encode(gt_boxes, anchors, weights)`` gives the ``[N, 4]`` offsets
    ``(dx, dy, dw, dh)`` of torchvision's ``BoxCoder``."""
    g = torch.Generator().manual_seed(8)
    gt, anchors = _random_boxes(12, g), _random_boxes(12, g)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 4.0, 0.5)):
        what = f"encode(gt_boxes, anchors, weights={weights})"
        got = learner(encode, gt.clone(), anchors.clone(), weights, what=what)
        expected = encode_boxes(gt, anchors, torch.tensor(weights))
        hint = None
        unit = (1.0, 1.0, 1.0, 1.0)
        mistakes = [  # (diagnosis, the weights used, the mistake)
            ("the weights multiply the offsets (they are the box coder's scale for "
             "each number)", unit, {}),
            ("divide the centres' difference by the anchor's size, not the ground "
             "truth's", weights, dict(relative_to_gt=True)),
            ("use the boxes' centres (x1 + w / 2), not their corners", weights,
             dict(corners=True)),
            ("widths are x2 - x1 (torchvision), not x2 - x1 + 1 (old Detectron)",
             weights, dict(plus_one=1.0)),
            ("the size offsets are log(w_gt / w_anchor): the anchor is in the "
             "denominator", weights, dict(inverted=True)),
        ]
        for message, w, kind in mistakes:
            if (w == unit and weights == unit and not kind) or hint:
                continue  # with unit weights, forgetting them changes nothing
            if _close(got, _encode(gt, anchors, w, **kind), atol=1e-4):
                hint = message
        assert_close(got, expected, what, hint=hint, atol=1e-5, rtol=1e-4)
    ok("encode gives torchvision's box offsets for 12 box pairs and 3 sets of "
       "weights")


# --- bilinear sampling ------------------------------------------------------------

def _reference_bilinear(feature: torch.Tensor, y: torch.Tensor,
                        x: torch.Tensor) -> torch.Tensor:
    """``[C, N]``: the course's ``roi_align`` sampling each point once, through a
    1x1 RoI of side 1 centred on it (aligned=False, one sample per bin)."""
    rois = torch.stack([torch.zeros_like(x), x - 0.5, y - 0.5, x + 0.5, y + 0.5], 1)
    out = roi_align(feature[None], rois, (1, 1), spatial_scale=1.0,
                              sampling_ratio=1)  # (N, C, 1, 1)
    return out[:, :, 0, 0].T.contiguous()


def _grid_sample_bilinear(feature, y, x, align_corners):
    H, W = feature.shape[-2:]
    if align_corners:  # pixel i at coordinate i, zeros outside
        gx, gy = 2 * x / max(W - 1, 1) - 1, 2 * y / max(H - 1, 1) - 1
    else:  # pixel i at coordinate i + 0.5 (grid_sample's own convention)
        gx, gy = 2 * x / W - 1, 2 * y / H - 1
    grid = torch.stack([gx, gy], -1)[None, None]  # (1, 1, N, 2)
    return F.grid_sample(feature[None], grid, mode="bilinear",
                         align_corners=align_corners)[0, :, 0]  # (C, N)


@exercise(
    forbid=[roi_align, RoIAlign, F.grid_sample],
    hints=[
        "a point between four pixels takes a weighted mean of them: the weight "
        "of each pixel grows as the point comes closer to it, along y and along "
        "x separately",
        "the four neighbours are the pixel at the floor of the point and the "
        "next one down and to the right; along each axis, the far neighbour "
        "weighs the fractional part and the near one the rest, and a "
        "neighbour's weight is its y weight times its x weight. At the edges, "
        "as RoIAlign: a point more than one pixel outside the map gives 0; a "
        "coordinate between -1 and 0 counts as 0; from the last pixel on, as "
        "the last pixel",
    ],
)
def check_bilinear(bilinear) -> None:
    """``bilinear(feature, y, x)`` samples ``feature [C, H, W]`` at the points
    ``(y[n], x[n])`` with RoIAlign's bilinear rule: ``[C, N]``."""
    g = torch.Generator().manual_seed(3)
    feature = torch.randn(2, 5, 7, generator=g)
    # Points on multiples of 1/8 (exact in binary): inside, on pixels, on the
    # last row/column, in [-1, 0), beyond the last pixel, and outside.
    inside_y = torch.tensor([0.0, 1.5, 2.25, 3.875, 0.125, 4.0, 2.0])
    inside_x = torch.tensor([0.0, 2.5, 5.125, 1.0, 6.0, 6.0, 3.375])
    edge_y = torch.tensor([-0.5, 4.5, 2.0, 4.875, -1.0, 1.0])
    edge_x = torch.tensor([3.0, 2.0, -0.75, 6.5, 0.5, 7.0])
    outside_y = torch.tensor([-1.5, 6.0, 2.0, 2.0])
    outside_x = torch.tensor([2.0, 3.0, -2.0, 7.5])
    cases = {"points inside the map": (inside_y, inside_x),
             "points on and just past the border": (edge_y, edge_x),
             "points outside the map": (outside_y, outside_x)}
    for name, (y, x) in cases.items():
        what = f"bilinear(feature [2, 5, 7], y, x) at {name}"
        got = learner(bilinear, feature.clone(), y.clone(), x.clone(), what=what)
        expected = _reference_bilinear(feature, y, x)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape[::-1]:
            hint = "return [C, N]: one column per point"
        elif _close(got, _grid_sample_bilinear(feature, y, x, False)):
            hint = ("pixel i is at coordinate i here (RoIAlign's convention), not "
                    "at i + 0.5")
        elif _close(got, _reference_bilinear(feature, x, y)):
            hint = "y indexes the rows (dimension 1), x the columns (dimension 2)"
        elif name != "points inside the map" and _close(
                got, _grid_sample_bilinear(feature, y, x, True)):
            hint = ("at the borders RoIAlign clamps: a coordinate in [-1, 0) "
                    "counts as 0 and one past the last pixel as the last pixel; "
                    "only points beyond -1 or H (W) give 0")
        assert_close(got, expected, what, hint=hint, atol=1e-5)
    ok("bilinear samples like RoIAlign inside the map, at its borders and "
       "outside it")


# --- the mask target -----------------------------------------------------------

def _masks_and_rois(g):
    masks = torch.zeros(3, 24, 32, dtype=torch.uint8)
    masks[0, 3:15, 4:20] = 1
    masks[1, 10:22, 12:30] = 1
    masks[1, 14:18, 18:24] = 0  # a hole
    yy, xx = torch.meshgrid(torch.arange(24), torch.arange(32), indexing="ij")
    masks[2] = ((yy - 12) ** 2 + (xx - 8) ** 2 <= 36).to(torch.uint8)  # a disc
    boxes = torch.tensor([[4.0, 3.0, 20.0, 15.0], [3.5, 2.25, 19.0, 16.5],
                          [12.0, 10.0, 30.0, 22.0], [10.0, 8.0, 26.0, 20.0],
                          [2.0, 6.0, 14.0, 18.0], [0.0, 0.0, 32.0, 24.0]])
    matched = torch.tensor([0, 0, 1, 1, 2, 2])
    return masks, boxes, matched


@exercise(
    forbid=[project_masks_on_boxes],
    hints=[
        "each RoI's target is its object's mask as seen through the RoI, "
        "resampled to M x M with the same RoIAlign that pools the features",
        "make the masks a float 'batch' [N, 1, H, W]: the index of each RoI's "
        "matched object is then the RoI's batch index in roi_align's [K, 5] "
        "boxes; spatial_scale 1 (the masks are image-sized), aligned=False",
    ],
)
def check_mask_targets(mask_targets) -> None:
    """``mask_targets(gt_masks, boxes, matched_idxs, M)`` gives the ``float
    [K, M, M]`` targets of ``project_masks_on_boxes``."""
    g = torch.Generator().manual_seed(4)
    masks, boxes, matched = _masks_and_rois(g)
    for M in (28, 7):
        what = f"mask_targets(gt_masks [3, 24, 32], boxes [6, 4], matched_idxs, {M})"
        got = learner(mask_targets, masks.clone(), boxes.clone(), matched.clone(), M,
                      what=what)
        expected = project_masks_on_boxes(masks, boxes, matched, M)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            rois = torch.cat([matched[:, None].float(), boxes], 1)
            fm = masks[:, None].float()
            aligned = roi_align(fm, rois, (M, M), 1.0, aligned=True)[:, 0]
            first = roi_align(fm[:1], torch.cat(
                [torch.zeros(6, 1), boxes], 1), (M, M), 1.0)[:, 0]
            if _close(got, aligned):
                hint = ("Mask R-CNN's targets use aligned=False, as its features "
                        "do: the target must line up with what the head sees")
            elif _close(got, first):
                hint = ("every RoI takes the mask of its own matched object: use "
                        "matched_idxs as the batch index")
            elif not got.is_floating_point():
                hint = "targets are float in [0, 1]: RoIAlign averages pixels"
        assert_close(got, expected, what, hint=hint, atol=1e-5)
    ok("mask_targets gives Mask R-CNN's RoIAligned mask targets for 6 RoIs")


# --- the mask loss -------------------------------------------------------------

@exercise(
    forbid=[maskrcnn_loss],
    hints=[
        "only the mask of each RoI's ground-truth class is trained: pick that "
        "one channel per RoI, then compare it pixel by pixel with the target",
        "index mask_logits[arange(K), labels] to get [K, M, M], then the mean "
        "binary cross-entropy with the target "
        "(F.binary_cross_entropy_with_logits takes logits)",
    ],
)
def check_mask_loss(mask_loss) -> None:
    """``mask_loss(mask_logits, mask_targets, labels)``: the mean per-pixel
    binary cross-entropy of each RoI's ground-truth class's mask."""
    g = torch.Generator().manual_seed(5)
    K, C, M = 6, 4, 7
    logits = 3 * torch.randn(K, C, M, M, generator=g)
    targets = torch.rand(K, M, M, generator=g).round()
    targets[0] = 0.5  # RoIAlign gives fractions at the mask's edges
    labels = torch.tensor([1, 3, 2, 1, 3, 2])
    what = "mask_loss(mask_logits [6, 4, 7, 7], mask_targets [6, 7, 7], labels)"
    leaf = logits.clone().requires_grad_(True)
    got = learner(mask_loss, leaf, targets.clone(), labels.clone(), what=what)
    own = logits[torch.arange(K), labels]
    expected = F.binary_cross_entropy_with_logits(own, targets)
    hint = None
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        value = got.detach().reshape(())
        every = F.binary_cross_entropy_with_logits(
            logits, targets[:, None].expand_as(logits))
        softmax = F.cross_entropy(logits, (targets >= 0.5).long())
        off = F.binary_cross_entropy_with_logits(
            logits[torch.arange(K), (labels - 1).clamp(min=0)], targets)
        summed = F.binary_cross_entropy_with_logits(own, targets, reduction="sum")
        if torch.isclose(value, every):
            hint = ("this is the mean over every class's mask; Mask R-CNN trains "
                    "only the ground-truth class's mask (decoupled from the others)")
        elif torch.isclose(value, softmax):
            hint = ("a softmax makes the classes compete for each pixel; Mask R-CNN "
                    "uses a sigmoid per class and only the true class's mask")
        elif torch.isclose(value, off):
            hint = "labels index the class channel directly (0 is the background)"
        elif torch.isclose(value, summed):
            hint = "the loss is the mean over RoIs and pixels, not the sum"
        elif not torch.isfinite(value):
            hint = ("binary_cross_entropy takes probabilities; with logits use "
                    "F.binary_cross_entropy_with_logits (numerically stable)")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.reshape(())
    assert_close(got, expected, what, hint=hint, atol=1e-5)
    if not got.requires_grad:
        fail(f"{what}: the loss has no gradient", "a loss that backpropagates "
             "to mask_logits", "a tensor without grad_fn",
             hint="compute it with torch operations on mask_logits (no .item(), "
                  "no .detach(), no numpy)")
    got.backward()
    grad = leaf.grad
    zero = [c for c in range(C) if c not in labels.tolist()]
    if grad is None or grad[:, zero].abs().sum() != 0:
        fail(f"{what}: other classes' masks get a gradient", "gradients only on "
             "the ground-truth class's channel", "gradients on other channels")
    ok("mask_loss is the binary cross-entropy of the ground-truth class's mask "
       f"(value {expected.item():.4f}), with gradients on that mask only")
