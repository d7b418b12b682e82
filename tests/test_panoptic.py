"""PanopticQuality: hand-worked cases and an independent brute-force reference
that follows the COCO panoptic evaluation (panopticapi) step by step."""

import math
from collections import defaultdict

import pytest
import torch

from utils.metrics import PanopticQuality, match_segments

THINGS, STUFFS, VOID = (3, 4), (0, 1), 255


def panoptic(cat, inst):
    return torch.stack([torch.as_tensor(cat), torch.as_tensor(inst)], dim=-1)


def reference(preds, targets, things, stuffs, void):
    """panopticapi's pq_compute_single_core + pq_average, written with dicts and
    per-pixel loops. Segment ids: (category, instance), stuff instance 0."""
    stats = defaultdict(lambda: [0.0, 0, 0, 0])  # iou, tp, fp, fn
    for pred, target in zip(preds, targets):
        def seg_of(cat, inst):
            if cat == void:
                return None
            return (cat, 0) if cat in stuffs else (cat, inst)

        area_g, area_p, inter = defaultdict(int), defaultdict(int), defaultdict(int)
        for (pc, pi), (tc, ti) in zip(pred.reshape(-1, 2).tolist(),
                                      target.reshape(-1, 2).tolist()):
            g, p = seg_of(tc, ti), seg_of(pc, pi)
            if g is not None:
                area_g[g] += 1
            if p is not None:
                area_p[p] += 1
            inter[(g, p)] += 1
        gt_matched, pred_matched = set(), set()
        for (g, p), i in inter.items():
            if g is None or p is None or g[0] != p[0]:
                continue
            union = area_p[p] + area_g[g] - i - inter.get((None, p), 0)
            if i / union > 0.5:
                stats[g[0]][0] += i / union
                stats[g[0]][1] += 1
                gt_matched.add(g)
                pred_matched.add(p)
        for g in area_g:
            if g not in gt_matched:
                stats[g[0]][3] += 1
        for p in area_p:
            if p not in pred_matched and not inter.get((None, p), 0) / area_p[p] > 0.5:
                stats[p[0]][2] += 1
    out, per_class = {}, {}
    for suffix, group in (("", things + stuffs), ("_things", things),
                          ("_stuff", stuffs)):
        pq = sq = rq = n = 0
        for c in group:
            iou, tp, fp, fn = stats[c]
            if tp + fp + fn == 0:
                per_class[c] = (0.0, 0.0, 0.0)
                continue
            n += 1
            d = tp + 0.5 * fp + 0.5 * fn
            per_class[c] = (iou / d, iou / tp if tp else 0.0, tp / d)
            pq, sq, rq = pq + iou / d, sq + per_class[c][1], rq + tp / d
        out.update({"pq" + suffix: pq / n if n else math.nan,
                    "sq" + suffix: sq / n if n else math.nan,
                    "rq" + suffix: rq / n if n else math.nan, "n" + suffix: n})
    return out, per_class


def random_panoptic(g, H=12, W=14):
    """Blocky random maps: stuff background, a few thing rectangles, void."""
    cat = torch.tensor(STUFFS)[torch.randint(0, 2, (H // 4 + 1, W // 4 + 1),
                                             generator=g)]
    cat = cat.repeat_interleave(4, 0).repeat_interleave(4, 1)[:H, :W].clone()
    inst = torch.zeros(H, W, dtype=torch.long)
    for k in range(1, int(torch.randint(1, 5, (1,), generator=g)) + 1):
        y, x = torch.randint(0, H - 2, (1,), generator=g), torch.randint(0, W - 2, (1,),
                                                                          generator=g)
        h, w = torch.randint(2, 7, (2,), generator=g)
        c = THINGS[int(torch.randint(0, 2, (1,), generator=g))]
        cat[y:y + h, x:x + w], inst[y:y + h, x:x + w] = c, k
    void = torch.rand(H, W, generator=g) < 0.1
    cat[void], inst[void] = VOID, 0
    return panoptic(cat, inst)


def perturb(g, pan):
    pan = pan.clone()
    shift = tuple(torch.randint(-1, 2, (2,), generator=g).tolist())
    pan = torch.roll(pan, shift, dims=(0, 1))
    noise = torch.rand(pan.shape[:2], generator=g) < 0.1
    pan[noise, 0] = torch.tensor(STUFFS + THINGS + (VOID,))[
        torch.randint(0, 5, (int(noise.sum()),), generator=g)]
    # Stuff gets arbitrary instance ids: they must not split its one segment.
    is_stuff = torch.tensor([c in STUFFS for c in range(256)])[pan[..., 0]]
    random_ids = torch.randint(0, 3, pan.shape[:2], generator=g)
    pan[..., 1] = torch.where(is_stuff, random_ids, pan[..., 1])
    return pan


@pytest.mark.parametrize("seed", range(6))
def test_matches_panopticapi_reference_on_random_maps(seed):
    g = torch.Generator().manual_seed(seed)
    targets = [random_panoptic(g) for _ in range(4)]
    preds = [perturb(g, t) for t in targets]
    pq = PanopticQuality(THINGS, STUFFS, VOID)
    pq.update(torch.stack(preds[:2]), torch.stack(targets[:2]))  # a batch ...
    for p, t in zip(preds[2:], targets[2:]):  # ... and single images
        pq.update(p, t)
    got = pq.compute()
    expected, per_class = reference(preds, targets, THINGS, STUFFS, VOID)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    for c, (p, s, r) in per_class.items():
        assert (got["per_class"][c]["pq"], got["per_class"][c]["sq"],
                got["per_class"][c]["rq"]) == pytest.approx((p, s, r), abs=1e-12)
    assert got["n"] > 0 and 0 < got["pq"] < 1  # the random case is not degenerate


def one_image(pred, target):
    pq = PanopticQuality(THINGS, STUFFS, VOID)
    pq.update(pred, target)
    return pq.compute()


def test_perfect_prediction():
    g = torch.Generator().manual_seed(0)
    t = random_panoptic(g)
    out = one_image(t, t)
    assert out["pq"] == out["sq"] == out["rq"] == 1.0


def test_void_pixels_are_left_out_of_the_union():
    # Target: thing 3 #1 on 10 pixels, void on 6 more. Prediction: 6 of the 10
    # and the 6 void pixels. IoU = 6 / (12 + 10 - 6 - 6) = 0.6 > 0.5: a match
    # (counting void it would be 6 / 16 and no match).
    cat = torch.zeros(4, 8, dtype=torch.long)  # stuff 0 everywhere else
    inst = torch.zeros(4, 8, dtype=torch.long)
    cat[0, :], cat[1, :2], inst[0, :], inst[1, :2] = 3, 3, 1, 1  # 10 pixels
    cat[2, :6] = VOID
    target = panoptic(cat, inst)
    pc, pi = torch.zeros_like(cat), torch.zeros_like(inst)
    pc[0, :6], pi[0, :6] = 3, 1
    pc[2, :6], pi[2, :6] = 3, 1
    out = one_image(panoptic(pc, pi), target)
    assert out["per_class"][3] == {"pq": 0.6, "sq": 0.6, "rq": 1.0, "tp": 1, "fp": 0,
                                   "fn": 0}


def test_unmatched_prediction_on_void_is_not_a_false_positive():
    cat = torch.zeros(4, 4, dtype=torch.long)
    cat[:, :2] = VOID  # 8 void pixels, stuff 0 on the other 8
    target = panoptic(cat, torch.zeros_like(cat))
    pc, pi = torch.zeros_like(cat), torch.zeros_like(cat)
    pc[:3, :2], pi[:3, :2] = 4, 1  # 6 pixels, all on void: ignored
    pc[3, :3], pi[3, :3] = 4, 2  # 3 pixels, 2 on void (> half): ignored
    pc[0, 2:], pi[0, 2:] = 3, 1  # 2 pixels, none on void: a false positive
    out = one_image(panoptic(pc, pi), target)
    assert out["per_class"][4]["fp"] == 0
    assert out["per_class"][3]["fp"] == 1
    # Exactly half on void is not "more than half": a false positive.
    pc2, pi2 = torch.zeros_like(cat), torch.zeros_like(cat)
    pc2[0, 1:3], pi2[0, 1:3] = 4, 1
    assert one_image(panoptic(pc2, pi2), target)["per_class"][4]["fp"] == 1


def test_stuff_is_one_segment_per_class_and_iou_half_is_no_match():
    cat = torch.zeros(2, 4, dtype=torch.long)
    cat[:, 2:] = 1
    target = panoptic(cat, torch.zeros_like(cat))
    # The prediction splits stuff 0 into "instances" 0 and 7: still one segment.
    inst = torch.tensor([[0, 7, 0, 0], [7, 0, 0, 0]])
    out = one_image(panoptic(cat, inst), target)
    assert out["per_class"][0]["tp"] == 1 and out["per_class"][0]["fp"] == 0
    assert out["pq_stuff"] == 1.0 and out["n_things"] == 0
    assert math.isnan(out["pq_things"])
    # IoU exactly 0.5 is not a match: 2 / (2 + 4 - 2) for stuff 1.
    pc = torch.zeros_like(cat)
    pc[0, 2:] = 1
    pc[1, :2] = 1
    out = one_image(panoptic(pc, torch.zeros_like(cat)), target)
    c1 = out["per_class"][1]
    assert (c1["tp"], c1["fp"], c1["fn"]) == (0, 1, 1)


def test_categories_must_agree_for_a_match():
    cat = torch.full((3, 3), 3)
    target = panoptic(cat, torch.ones_like(cat))
    out = one_image(panoptic(torch.full((3, 3), 4), torch.ones_like(cat)), target)
    assert out["per_class"][3]["fn"] == 1 and out["per_class"][4]["fp"] == 1
    assert out["pq"] == 0.0 and out["n"] == 2


def test_match_segments_brute_force_and_uniqueness():
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        t = torch.randint(0, 5, (10, 10), generator=g)
        p = torch.where(torch.rand(10, 10, generator=g) < 0.8, t,
                        torch.randint(0, 5, (10, 10), generator=g))
        got = match_segments(t, p, void=0)
        pairs = []
        for a in range(1, 5):
            for b in range(1, 5):
                i = int(((t == a) & (p == b)).sum())
                u = int(((t == a) | (p == b)).sum()) - int(((t == 0) & (p == b)).sum())
                if u and i / u > 0.5:
                    pairs.append((a, b, i / u))
        assert list(zip(got["target_ids"].tolist(), got["pred_ids"].tolist())) == [
            (a, b) for a, b, _ in pairs]
        assert got["iou"].tolist() == pytest.approx([x for *_, x in pairs])
        assert len(set(got["target_ids"].tolist())) == len(pairs)
        assert len(set(got["pred_ids"].tolist())) == len(pairs)


def test_bad_input():
    pq = PanopticQuality(THINGS, STUFFS, VOID)
    with pytest.raises(ValueError, match=r"categories \[9\]"):
        pq.update(panoptic(torch.full((2, 2), 9), torch.zeros(2, 2, dtype=torch.long)),
                  panoptic(torch.zeros(2, 2, dtype=torch.long),
                           torch.zeros(2, 2, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 2\]"):
        pq.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2,
                                                                    dtype=torch.long))
    with pytest.raises(ValueError, match="twice"):
        PanopticQuality((1, 2), (2,))


def test_all_void_images():
    void = panoptic(torch.full((3, 3), VOID), torch.zeros(3, 3, dtype=torch.long))
    out = one_image(void, void)
    assert out["n"] == 0 and math.isnan(out["pq"])
    # A prediction entirely on void is ignored, not a false positive.
    out = one_image(panoptic(torch.full((3, 3), 3), torch.ones(3, 3, dtype=torch.long)),
                    void)
    assert out["per_class"][3]["fp"] == 0
    # Everything predicted void: every ground-truth segment is a false negative.
    target = panoptic(torch.tensor([[0, 0, 3], [0, 0, 3], [1, 1, 1]]),
                      torch.tensor([[0, 0, 2], [0, 0, 2], [0, 0, 0]]))
    out = one_image(void, target)
    assert [out["per_class"][c]["fn"] for c in (0, 1, 3)] == [1, 1, 1]
    assert out["pq"] == 0.0 and out["n"] == 3
