"""The checks under chapter 09's exercises: each passes a correct answer
written here independently (loops, not the course's code), refuses the
course's own code, and refuses plausible wrong answers with a message that
names the mistake."""

from collections import defaultdict

import torch
import torch.nn.functional as F
from check_helpers import fails, passes

from utils.checks import ch09
from utils.metrics import match_segments
from utils.models.panoptic import FusionConfig, panoptic_fusion

REFUSED = "the course's own solution"  # the framework's words for the reference
VOID = 255


# --- fusion ------------------------------------------------------------------------

def fuse_by_loops(semantic, masks, scores, cats, stuff, score_t, overlap_t, area_t,
                  *, by_score=True, free_only=True, area_after=True):
    H, W = semantic.shape
    out = [[[VOID, 0] for _ in range(W)] for _ in range(H)]
    order = list(range(len(scores)))
    if by_score:
        order.sort(key=lambda i: -float(scores[i]))
    k = 0
    for i in order:
        if scores[i] < score_t:
            continue
        pix = [(y, x) for y in range(H) for x in range(W) if masks[i][y][x] >= 0.5]
        if not pix:
            continue
        taken = sum(out[y][x][0] != VOID for y, x in pix)
        if free_only and taken / len(pix) > overlap_t:
            continue
        k += 1
        for y, x in pix:
            if out[y][x][0] == VOID or not free_only:
                out[y][x] = [int(cats[i]), k]
    for c in stuff:
        free = [(y, x) for y in range(H) for x in range(W)
                if out[y][x][0] == VOID and semantic[y][x] == c]
        whole = sum(int(semantic[y][x] == c) for y in range(H) for x in range(W))
        area = len(free) if area_after else whole
        if free and area >= area_t:
            for y, x in free:
                out[y][x] = [c, 0]
    return torch.tensor(out, dtype=torch.int64).reshape(H, W, 2)


def test_fuse_check(capsys):
    passes(capsys, (ch09.check_fuse, fuse_by_loops))

    def canonical(sem, masks, scores, cats, stuff, st, ot, area):
        cfg = FusionConfig(score_thresh=st, overlap_thresh=ot, stuff_min_area=area)
        return panoptic_fusion(sem, masks, scores, cats, stuff, cfg)

    fails(ch09.check_fuse, canonical, REFUSED)
    fails(ch09.check_fuse, lambda *a: fuse_by_loops(*a, free_only=False),
          "only where no better-scored thing")
    fails(ch09.check_fuse, lambda *a: fuse_by_loops(*a, by_score=False),
          "best score first")
    fails(ch09.check_fuse, lambda *a: fuse_by_loops(*a, area_after=False),
          "what is left of it")
    fails(ch09.check_fuse, lambda *a: fuse_by_loops(*a).float(), "dtype")


# --- the semantic branch's merge ---------------------------------------------------

def merge_by_hand(features, blocks, mode="bilinear", concat=False, align=False):
    maps = []
    for k in range(4):
        x = features[f"p{k + 2}"]
        for block in blocks[k]:
            x = block(x)
            if k:
                kw = {} if mode == "nearest" else {"align_corners": align}
                x = F.interpolate(x, size=(x.shape[-2] * 2, x.shape[-1] * 2),
                                  mode=mode, **kw)
        maps.append(x)
    return torch.cat(maps, 1) if concat else maps[0] + maps[1] + maps[2] + maps[3]


def test_merge_check(capsys):
    passes(capsys, (ch09.check_merge_levels, merge_by_hand))

    def canonical(features, blocks):
        from utils.models.panoptic import SemanticFPNHead
        head = SemanticFPNHead(6, 4, channels=8)
        return head.merge(features)

    fails(ch09.check_merge_levels, canonical, REFUSED)
    fails(ch09.check_merge_levels, lambda f, b: merge_by_hand(f, b, mode="nearest"),
          "bilinear")
    fails(ch09.check_merge_levels, lambda f, b: merge_by_hand(f, b, align=True),
          "align_corners=False")
    fails(ch09.check_merge_levels, lambda f, b: merge_by_hand(f, b, concat=True),
          "not concatenated")


# --- PQ's matching -----------------------------------------------------------------

def match_by_dicts(target, pred, void, strict=True, void_union=True, void_fp=True):
    inter, at, ap = defaultdict(int), defaultdict(int), defaultdict(int)
    on_void = defaultdict(int)
    for t, p in zip(target.reshape(-1).tolist(), pred.reshape(-1).tolist()):
        at[t] += 1
        ap[p] += 1
        inter[t, p] += 1
        if t == void:
            on_void[p] += 1
    pairs = []
    for t in sorted(at):
        for p in sorted(ap):
            if t == void or p == void or not inter[t, p]:
                continue
            union = at[t] + ap[p] - inter[t, p] - (on_void[p] if void_union else 0)
            iou = inter[t, p] / union
            if iou > 0.5 or (not strict and iou >= 0.5):
                pairs.append((t, p, iou))
    matched_t = {t for t, _, _ in pairs}
    matched_p = {p for _, p, _ in pairs}
    fn = sum(1 for t in at if t != void and t not in matched_t)
    fp = sum(1 for p in ap if p != void and p not in matched_p
             and not (void_fp and on_void[p] / ap[p] > 0.5))
    return {"target_ids": torch.tensor([t for t, _, _ in pairs], dtype=torch.int64),
            "pred_ids": torch.tensor([p for _, p, _ in pairs], dtype=torch.int64),
            "iou": torch.tensor([i for _, _, i in pairs], dtype=torch.float64),
            "fn": fn, "fp": fp}


def test_match_check(capsys):
    passes(capsys, (ch09.check_match, match_by_dicts))
    fails(ch09.check_match, match_segments, REFUSED)
    fails(ch09.check_match, lambda t, p, v: match_by_dicts(t, p, v, strict=False),
          "strictly above 0.5")
    fails(ch09.check_match, lambda t, p, v: match_by_dicts(t, p, v, void_union=False),
          "predicted pixels that lie on target void")
    fails(ch09.check_match, lambda t, p, v: match_by_dicts(t, p, v, void_fp=False),
          "more than half on void")
