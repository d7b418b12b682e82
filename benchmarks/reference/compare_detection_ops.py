"""Compare the course's detection operations (utils/models/detection) with
torchvision's on random and edge cases.

NEEDS the reference environment (torchvision, not a course dependency):

    /work/refvenv/bin/python benchmarks/reference/compare_detection_ops.py [--cases N]

For every operation it prints the largest absolute difference from torchvision
over all cases (``exact`` when every output is bitwise equal), or, for index
outputs (NMS keeps, matches, sampled masks, anchors), whether all were equal.
It exits with status 1 if any comparison fails its tolerance.
"""

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision.models.detection import _utils as tv_det_utils  # noqa: E402
from torchvision.models.detection.anchor_utils import (  # noqa: E402
    AnchorGenerator as TVAnchorGenerator,
)
from torchvision.models.detection.image_list import ImageList as TVImageList  # noqa: E402
from torchvision.models.detection.roi_heads import (  # noqa: E402
    paste_masks_in_image as tv_paste_masks_in_image,
)
from torchvision.ops import boxes as tv_boxes  # noqa: E402
from torchvision.ops import poolers as tv_poolers  # noqa: E402

from utils.models import detection as ours  # noqa: E402

RESULTS = []  # (name, cases, worst difference or None for exact, tolerance)


def record(name, diffs, tolerance=0.0):
    """diffs: list of max-abs differences (floats; 0.0 = equal; inf = mismatch)."""
    worst = max(diffs) if diffs else 0.0
    RESULTS.append((name, len(diffs), worst, tolerance))


def maxdiff(a, b):
    if a.shape != b.shape:
        return math.inf
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    same_nan = torch.isnan(a) & torch.isnan(b)
    if (torch.isnan(a) ^ torch.isnan(b)).any():
        return math.inf
    d = (a - b).abs()
    d[same_nan] = 0
    inf_equal = torch.isinf(a) & (a == b)
    d[inf_equal] = 0
    return d.max().item()


def relative(a, b):
    """max |a - b| / max |b|: for gradients, sums of many terms in float32."""
    return maxdiff(a, b) / max(b.abs().max().item(), 1e-30) if b.numel() else 0.0


def exact(a, b):
    return 0.0 if a.shape == b.shape and torch.equal(a, b) else math.inf


def random_boxes(n, extent=100.0, max_size=40.0, g=None, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * max_size
    return torch.cat([xy, xy + wh], 1).to(dtype)


def edge_boxes():
    """Zero-area, degenerate, identical, touching, outside, pixel-boundary boxes."""
    return torch.tensor([
        [0, 0, 0, 0], [0, 0, 0, 0], [5, 5, 5, 9], [5, 5, 9, 5],  # zero area
        [10, 10, 20, 20], [10, 10, 20, 20], [20, 10, 30, 20],  # identical, touching
        [10.5, 10.5, 20.5, 20.5], [-30, -30, -10, -10], [200, 200, 240, 250],
        [0, 0, 1, 1], [0.4999, 0.5, 1.5, 2.5], [3, 3, 2, 2],  # inverted
    ], dtype=torch.float32)


def compare_boxes(cases, g):
    area, iou, clip, small, m2b = [], [], [], [], []
    for i in range(cases):
        a = random_boxes(int(torch.randint(0, 60, (), generator=g)), g=g)
        b = random_boxes(int(torch.randint(0, 60, (), generator=g)), g=g)
        if i % 4 == 0:
            a, b = torch.cat([a, edge_boxes()]), torch.cat([edge_boxes(), b])
        if i % 7 == 0:
            a, b = a.round().to(torch.int16), b.round().to(torch.int64)
        if i % 11 == 0:
            a, b = a.half(), b.half()
        area.append(exact(ours.box_area(a), tv_boxes.box_area(a)))
        iou.append(maxdiff(ours.box_iou(a, b), tv_boxes.box_iou(a, b)))
        iou.append(exact(torch.isnan(ours.box_iou(a, b)),
                         torch.isnan(tv_boxes.box_iou(a, b))))
        size = (int(torch.randint(1, 120, (), generator=g)),
                int(torch.randint(1, 120, (), generator=g)))
        clip.append(exact(ours.clip_boxes_to_image(a, size),
                          tv_boxes.clip_boxes_to_image(a, size)))
        min_size = float(torch.rand((), generator=g) * 20)
        small.append(exact(ours.remove_small_boxes(a, min_size),
                           tv_boxes.remove_small_boxes(a, min_size)))
        masks = torch.rand(int(torch.randint(0, 6, (), generator=g)), 17, 23,
                           generator=g) > 0.97
        if len(masks):
            masks[0] = False  # an empty mask
        m2b.append(exact(ours.masks_to_boxes(masks), tv_boxes.masks_to_boxes(masks)))
    record("box_area", area)
    record("box_iou (incl. nan positions)", iou)
    record("clip_boxes_to_image", clip)
    record("remove_small_boxes", small)
    record("masks_to_boxes", m2b)


def compare_nms(cases, g):
    keeps, batched = [], []
    thresholds = [0.0, 0.3, 0.5, 0.7, 0.9, 1.0, -0.1, 0.1 + 0.2]
    for i in range(cases):
        n = int(torch.randint(0, 1500, (), generator=g)) if i % 5 else \
            int(torch.randint(0, 20, (), generator=g))
        dtype = torch.float64 if i % 6 == 0 else torch.float32
        boxes = random_boxes(n, extent=300, max_size=80, g=g, dtype=dtype)
        scores = torch.rand(n, generator=g, dtype=dtype)
        if i % 3 == 0:  # many ties
            scores = torch.randint(0, 5, (n,), generator=g).to(dtype)
        if i % 4 == 0 and n:  # duplicates and degenerate boxes
            boxes = torch.cat([boxes, boxes[: n // 3], edge_boxes().to(dtype)])
            scores = torch.cat([scores, scores[: n // 3],
                                torch.rand(len(edge_boxes()), generator=g,
                                           dtype=dtype)])
        t = thresholds[i % len(thresholds)] if i % 2 else float(torch.rand((),
                                                                          generator=g))
        keeps.append(exact(ours.nms(boxes, scores, t), tv_boxes.nms(boxes, scores, t)))
        idxs = torch.randint(0, 4, (len(boxes),), generator=g)
        batched.append(exact(ours.batched_nms(boxes, scores, idxs, t),
                             tv_boxes.batched_nms(boxes, scores, idxs, t)))
    record("nms keeps (exact)", keeps)
    record("batched_nms keeps (exact, both paths)", batched)


def random_rois(k, n_images, H, W, scale, g, dtype=torch.float32):
    extent = torch.tensor([W, H], dtype=torch.float32) / scale
    xy = (torch.rand(k, 2, generator=g) * 1.3 - 0.15) * extent
    wh = torch.rand(k, 2, generator=g) * extent * 0.6
    rois = torch.cat([torch.randint(0, n_images, (k, 1), generator=g).float(),
                      xy, xy + wh], 1)
    quarter = k // 4  # on pixel boundaries and half pixels
    rois[:quarter, 1:] = torch.round(rois[:quarter, 1:] * 2) / 2
    return rois.to(dtype)


def compare_roi_ops(cases, g):
    fwd, bwd, pool_fwd, pool_bwd = [], [], [], []
    fwd64 = []
    for i in range(cases):
        dtype = torch.float64 if i % 5 == 0 else torch.float32
        N, C = int(torch.randint(1, 3, (), generator=g)), int(torch.randint(1, 6, (),
                                                                            generator=g))
        H, W = int(torch.randint(1, 40, (), generator=g)), int(torch.randint(1, 40, (),
                                                                             generator=g))
        x = torch.randn(N, C, H, W, generator=g, dtype=dtype)
        if i % 3 == 0:  # integer values: ties for roi_pool's argmax
            x = torch.randint(0, 3, (N, C, H, W), generator=g).to(dtype)
        scale = [1.0, 0.5, 0.25, 1 / 16, 1 / 3][i % 5]
        k = int(torch.randint(0, 40, (), generator=g))
        rois = random_rois(k, N, H, W, scale, g, dtype)
        if i % 4 == 0 and k:
            rois[0, 3:] = rois[0, 1:3]  # zero-area
            rois[-1, 1:] = torch.tensor([-100, -100, -50, -50], dtype=dtype)  # outside
        out_size = [(7, 7), (2, 3), (14, 14), (1, 1)][i % 4]
        sr = [-1, 0, 1, 2, 3][i % 5]
        aligned = bool(i % 2)
        boxes = rois if i % 3 else [rois[rois[:, 0] == b, 1:] for b in range(N)]
        if not isinstance(boxes, torch.Tensor):  # list form reorders by image
            rois = torch.cat([rois[rois[:, 0] == b] for b in range(N)])
        gout = torch.randn(len(rois), C, *out_size, generator=g, dtype=dtype)

        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        a = ours.roi_align(xa, boxes, out_size, scale, sr, aligned)
        b = torchvision.ops.roi_align(xb, boxes, out_size, scale, sr, aligned)
        (fwd64 if dtype == torch.float64 else fwd).append(maxdiff(a, b))
        if len(rois):
            a.backward(gout)
            b.backward(gout)
            bwd.append(relative(xa.grad, xb.grad))

        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        a = ours.roi_pool(xa, boxes, out_size, scale)
        b = torchvision.ops.roi_pool(xb, boxes, out_size, scale)
        pool_fwd.append(maxdiff(a, b))
        if len(rois):
            a.backward(gout)
            b.backward(gout)
            pool_bwd.append(relative(xa.grad, xb.grad))
    record("roi_align forward, float32", fwd, 1e-5)
    record("roi_align forward, float64", fwd64, 1e-12)
    record("roi_align gradient (input), relative to max |grad|", bwd, 1e-5)
    record("roi_pool forward", pool_fwd)
    record("roi_pool gradient (argmax, ties), relative", pool_bwd, 1e-5)


def compare_poolers(cases, g):
    levels, outs = [], []
    for i in range(cases):
        n_images = int(torch.randint(1, 3, (), generator=g))
        sizes = [tuple(torch.randint(100, 400, (2,), generator=g).tolist())
                 for _ in range(n_images)]
        Hp = max(s[0] for s in sizes) // 32 * 32 + 32
        Wp = max(s[1] for s in sizes) // 32 * 32 + 32
        names = ["0", "1", "2", "3"]
        feats = {name: torch.randn(n_images, 4, Hp // 2 ** (k + 2), Wp // 2 ** (k + 2),
                                   generator=g) for k, name in enumerate(names)}
        feats["pool"] = torch.randn(n_images, 4, 2, 2, generator=g)
        boxes = []
        for h, w in sizes:
            k = int(torch.randint(0, 30, (), generator=g))
            xy = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) * 0.8
            wh = torch.rand(k, 2, generator=g) ** 2 * torch.tensor([w, h])
            b = torch.cat([xy, xy + wh], 1)
            if k:
                b[0] = torch.tensor([0.0, 0.0, 112.0, 112.0])  # exactly level 3
                b[-1] = torch.tensor([5.0, 5.0, 5.0, 9.0])  # zero area: level 2
            boxes.append(b)
        out_size = [7, 14, (5, 3)][i % 3]
        sr = [2, -1, 0][i % 3]
        mine = ours.MultiScaleRoIAlign(names, out_size, sr)
        theirs = tv_poolers.MultiScaleRoIAlign(names, out_size, sr)
        a, b = mine(feats, boxes, sizes), theirs(feats, boxes, sizes)
        outs.append(maxdiff(a, b))
        levels.append(exact(mine.map_levels(boxes), theirs.map_levels(boxes)))
        levels.append(0.0 if mine.scales == theirs.scales else math.inf)
    record("LevelMapper levels and inferred scales (exact)", levels)
    record("MultiScaleRoIAlign", outs, 1e-5)


def compare_anchors(cases, g):
    diffs = []
    configs = [
        (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
        (((128, 256, 512),), ((0.5, 1.0, 2.0),)),
        (((16, 24.5, 33),), ((0.3, 1.0, 1.7, 3.0),)),
    ]
    for i in range(cases):
        sizes, ratios = configs[i % len(configs)]
        H = int(torch.randint(64, 300, (), generator=g))
        W = int(torch.randint(64, 300, (), generator=g))
        images = torch.zeros(2, 3, H, W)
        image_sizes = [(H, W), (H - 10, W - 3)]
        feats = [torch.zeros(2, 8, math.ceil(H / 2 ** k), math.ceil(W / 2 ** k))
                 for k in range(2, 2 + len(sizes))]
        a = ours.AnchorGenerator(sizes, ratios)(ours.ImageList(images, image_sizes),
                                                feats)
        b = TVAnchorGenerator(sizes, ratios)(TVImageList(images, image_sizes), feats)
        diffs += [exact(x, y) for x, y in zip(a, b)]
    record("AnchorGenerator (exact)", diffs)


def compare_coder_matcher_sampler(cases, g):
    enc, dec, match, samp = [], [], [], []
    for i in range(cases):
        weights = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)][i % 2]
        mine, theirs = ours.BoxCoder(weights), tv_det_utils.BoxCoder(weights)
        n = int(torch.randint(0, 50, (), generator=g))
        ref = random_boxes(n, g=g) + torch.tensor([0, 0, 1, 1])
        gt = random_boxes(n, g=g) + torch.tensor([0, 0, 1, 1])
        pairs = zip(mine.encode([gt, ref], [ref, gt]),
                    theirs.encode([gt, ref], [ref, gt]))
        enc.append(max(exact(x, y) for x, y in pairs))
        codes = torch.randn(2 * n, 4 * 3, generator=g) * 3  # some beyond the clamp
        dec.append(exact(mine.decode(codes, [ref, gt]),
                         theirs.decode(codes, [ref, gt])))

        M = int(torch.randint(1, 6, (), generator=g))
        q = torch.rand(M, n + 1, generator=g)
        q = torch.round(q * 10) / 10  # ties
        hi, lo = [(0.7, 0.3), (0.5, 0.5), (0.6, 0.4)][i % 3]
        allow = bool(i % 2)
        match.append(exact(ours.Matcher(hi, lo, allow)(q.clone()),
                           tv_det_utils.Matcher(hi, lo, allow)(q.clone())))

        labels = [torch.randint(-1, 3, (int(torch.randint(0, 800, (), generator=g)),),
                                generator=g) for _ in range(2)]
        batch, frac = [(256, 0.5), (512, 0.25), (16, 0.5)][i % 3]
        seed = int(torch.randint(0, 2**31, (), generator=g))
        torch.manual_seed(seed)
        a = ours.BalancedPositiveNegativeSampler(batch, frac)(labels)
        torch.manual_seed(seed)
        b = tv_det_utils.BalancedPositiveNegativeSampler(batch, frac)(labels)
        samp.append(max(exact(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1])))
    record("BoxCoder.encode (exact)", enc)
    record("BoxCoder.decode incl. clamp (exact)", dec)
    record("Matcher, with/without low-quality matches (exact)", match)
    record("BalancedPositiveNegativeSampler, same seed (exact)", samp)


def compare_paste(cases, g):
    diffs = []
    for i in range(cases):
        n = int(torch.randint(0, 8, (), generator=g))
        M = [28, 14, 5][i % 3]
        H, W = torch.randint(20, 120, (2,), generator=g).tolist()
        masks = torch.rand(n, 1, M, M, generator=g)
        # Boxes that overlap the image, some crossing its borders; every other
        # case clipped as Mask R-CNN's postprocessing does.
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W - 1, H - 1]) - 5
        wh = torch.rand(n, 2, generator=g) * 60 + 6
        boxes = torch.cat([xy, xy + wh], 1)
        if i % 2:
            boxes = ours.clip_boxes_to_image(boxes, (H, W))
        diffs.append(exact(ours.paste_masks_in_image(masks, boxes, (H, W)),
                           tv_paste_masks_in_image(masks, boxes, (H, W))))
    record("paste_masks_in_image (exact)", diffs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200,
                        help="random cases per operation (default 200)")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    compare_boxes(args.cases, g)
    compare_nms(args.cases, g)
    compare_roi_ops(args.cases, g)
    compare_poolers(max(args.cases // 4, 1), g)
    compare_anchors(max(args.cases // 10, 3), g)
    compare_coder_matcher_sampler(args.cases, g)
    compare_paste(max(args.cases // 4, 1), g)
    failed = False
    print(f"{'operation':55s} {'cases':>6s}  max |ours - torchvision|")
    for name, n, worst, tol in RESULTS:
        ok = worst <= tol
        failed |= not ok
        shown = "exact" if worst == 0 else f"{worst:.3g}"
        print(f"{name:55s} {n:6d}  {shown}{'' if ok else '  FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
