"""Checks for chapter 09 (panoptic segmentation, Panoptic FPN).

Each compares the learner's code with the course's canonical code on fixed
hand-made and random inputs, and refuses that code as an answer (see
:mod:`utils.checks.common`): the fusion with
:func:`utils.models.panoptic.panoptic_fusion`, the semantic branch's merge
with :class:`utils.models.panoptic.SemanticFPNHead`, PQ's matching with
:func:`utils.metrics.match_segments`. Known mistakes are named.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.checks.common import assert_close, assert_equal, exercise, fail, learner, ok
from utils.metrics.panoptic import PanopticQuality, match_segments, segment_iou
from utils.models.panoptic.fusion import (
    FusionConfig,
    add_stuff,
    panoptic_fusion,
    paste_things,
)
from utils.models.panoptic.semantic_head import SemanticFPNHead, UpsampleStage

VOID = 255
STUFF = (0, 1, 2)


# --- fusion -------------------------------------------------------------------------

def _fusion_cases():
    """(semantic, masks, scores, categories, score, overlap, min_area) cases:
    overlapping things, a low score, a mostly covered duplicate, a small stuff
    region, thing pixels no detection claims, then random ones."""
    H = W = 12
    semantic = torch.zeros(H, W, dtype=torch.int64)
    semantic[:, 8:] = 1
    semantic[9:, :4] = 2  # 12 pixels of stuff 2, 6 of them under thing 4
    semantic[2:7, 2:7] = 4  # the semantic model's thing pixels
    masks = torch.zeros(5, H, W)
    masks[0, 2:6, 2:6] = 0.9  # score 0.7
    masks[1, 4:8, 4:8] = 0.8  # score 0.9: pasted first
    masks[2, 5:7, 5:7] = 0.95  # score 0.8: inside 1, dropped
    masks[3, 0:3, 9:12] = 0.9  # score 0.3: below the threshold
    masks[4, 9:12, 2:9] = 0.6  # score 0.6, on stuffs 0, 1 and 2
    scores = torch.tensor([0.7, 0.9, 0.8, 0.3, 0.6])
    cats = torch.tensor([3, 4, 4, 5, 6])
    cases = [(semantic, masks, scores, cats, 0.5, 0.5, 8),
             (semantic, masks, scores, cats, 0.2, 0.3, 5),
             (semantic, masks[:0], scores[:0], cats[:0], 0.5, 0.5, 7)]
    g = torch.Generator().manual_seed(9)
    for _ in range(3):
        m = torch.zeros(6, 16, 14)
        for i in range(6):
            y, x = torch.randint(0, 12, (2,), generator=g).tolist()
            m[i, y:y + 5, x:x + 4] = 0.55 + 0.4 * torch.rand(1, generator=g)
        scores = torch.rand(6, generator=g)
        cases.append((torch.randint(0, 6, (16, 14), generator=g), m, scores,
                      torch.randint(3, 6, (6,), generator=g), 0.4, 0.5, 10))
    return cases


def _index_order(semantic, masks, scores, cats, cfg):
    """A common slip: the things in the detector's order, not by score."""
    rank = 1.0 - 1e-4 * torch.arange(len(scores))  # decreasing: index order
    kept = torch.where(scores >= cfg.score_thresh, rank, torch.full_like(rank, -1))
    return add_stuff(paste_things(masks, kept, cats, cfg), semantic, STUFF, cfg)


def _overwrite(semantic, masks, scores, cats, cfg):
    """Each kept thing pasted whole, later ones over earlier ones."""
    H, W = semantic.shape
    cat = torch.full((H, W), VOID, dtype=torch.int64)
    inst = torch.zeros((H, W), dtype=torch.int64)
    k = 0
    for i in torch.sort(scores, descending=True, stable=True).indices.tolist():
        if scores[i] < cfg.score_thresh or not (masks[i] >= 0.5).any():
            continue
        k += 1
        cat[masks[i] >= 0.5], inst[masks[i] >= 0.5] = int(cats[i]), k
    return add_stuff(torch.stack([cat, inst], -1), semantic, STUFF, cfg)


def _whole_stuff_area(semantic, masks, scores, cats, cfg):
    """The stuff area measured before the things took their pixels."""
    things = paste_things(masks, scores, cats, cfg)
    out = things.clone()
    for c in STUFF:
        region = semantic == c
        if 0 < int(region.sum()) and int(region.sum()) >= cfg.stuff_min_area:
            free = region & (things[..., 0] == VOID)
            out[free] = torch.tensor([c, 0])
    return out


@exercise(
    forbid=[panoptic_fusion, paste_things, add_stuff],
    hints=[
        "two passes over one map that starts all void: the things, best score "
        "first, each on the pixels still free, then the stuff classes on what "
        "is left; count areas in pixels",
        "sort by score (descending); stop below score_thresh; binarise a mask at "
        "0.5; drop a thing when (its pixels already taken) / (its pixels) > "
        "overlap_thresh; number the kept things 1, 2, ...; a stuff class counts "
        "only its pixels that are still void and stays void below stuff_min_area",
    ],
)
def check_fuse(fuse) -> None:
    """``fuse(semantic, masks, scores, categories, stuff_ids, score_thresh,
    overlap_thresh, stuff_min_area)`` gives the course's fusion."""
    for n, (sem, masks, scores, cats, st, ot, area) in enumerate(_fusion_cases()):
        cfg = FusionConfig(score_thresh=st, overlap_thresh=ot, stuff_min_area=area)
        what = f"fuse on case {n} ({len(scores)} detections, {tuple(sem.shape)})"
        got = learner(fuse, sem.clone(), masks.clone(), scores.clone(), cats.clone(),
                      STUFF, st, ot, area, what=what)
        expected = panoptic_fusion(sem, masks, scores, cats, STUFF, cfg)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            if torch.equal(got, _overwrite(sem, masks, scores, cats, cfg)):
                hint = ("a thing is pasted only where no better-scored thing is, "
                        "and dropped when too much of it is taken")
            elif torch.equal(got, _index_order(sem, masks, scores, cats, cfg)):
                hint = "the things go best score first, not in the detector's order"
            elif torch.equal(got, _whole_stuff_area(sem, masks, scores, cats, cfg)):
                hint = ("a stuff class's area is what is left of it after the "
                        "things, not its whole region in the semantic map")
        assert_equal(got, expected, what, hint=hint)
    ok(f"fuse gives the course's fusion on {len(_fusion_cases())} cases")


# --- the semantic branch's merge ----------------------------------------------------

def _head_and_features(seed):
    torch.manual_seed(seed)
    head = SemanticFPNHead(6, 4, channels=8)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.4)
    H, W = (32, 48) if seed % 2 else (64, 32)
    feats = {f"p{k}": torch.randn(1, 6, H >> (k - 2), W >> (k - 2))
             for k in range(2, 6)}
    # The stages as conv-GN-ReLU blocks without their upsampling.
    blocks = [[torch.nn.Sequential(*list(stage)[:3]) for stage in level]
              for level in head.scale_heads]
    return head, feats, blocks


def _merge_with(features, blocks, mode="bilinear", align=False, first=False):
    out = 0
    for k, name in enumerate(("p2", "p3", "p4", "p5")):
        x = features[name]
        for block in blocks[k]:
            if first and k > 0:
                x = F.interpolate(x, scale_factor=2.0, mode=mode,
                                  **({} if mode == "nearest" else
                                     {"align_corners": align}))
            x = block(x)
            if not first and k > 0:
                x = F.interpolate(x, scale_factor=2.0, mode=mode,
                                  **({} if mode == "nearest" else
                                     {"align_corners": align}))
        out = out + x
    return out


@exercise(
    forbid=[SemanticFPNHead, UpsampleStage],
    hints=[
        "every level must reach 1/4 scale: P2 needs no upsampling, P5 three; "
        "each block is followed by a 2x upsampling except at P2; then the levels "
        "are added",
        "for level k (P2 is 0) apply its blocks in order, each followed by a 2x "
        "bilinear upsampling without corner alignment when k > 0; sum the four "
        "results (same shape, no concatenation)",
    ],
)
def check_merge_levels(merge_levels) -> None:
    """``merge_levels(features, blocks)``: ``features`` ``{"p2": ..., "p5":
    ...}``, ``blocks[k]`` the conv-GN-ReLU blocks of level k -> the summed
    1/4-scale map of Panoptic FPN's semantic branch."""
    for seed in (0, 1, 2):
        head, feats, blocks = _head_and_features(seed)
        what = f"merge_levels on P2 of {tuple(feats['p2'].shape)}"
        with torch.no_grad():
            got = learner(merge_levels, feats, blocks, what=what)
            expected = head.merge(feats)
            hint = None
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                for kwargs, text in (
                        ({"mode": "nearest"}, "the paper's upsampling is bilinear"),
                        ({"align": True}, "bilinear without corner alignment "
                                          "(align_corners=False)"),
                        ({"first": True}, "each block convolves first, then "
                                          "upsamples")):
                    if torch.allclose(got, _merge_with(feats, blocks, **kwargs),
                                      atol=1e-5):
                        hint = text
            elif isinstance(got, torch.Tensor) and got.ndim == 4 and (
                    got.shape[1] == 4 * expected.shape[1]):
                hint = "the levels are summed, not concatenated"
        assert_close(got, expected, what, hint=hint, atol=1e-5)
    ok("merge_levels gives the semantic branch's 1/4-scale sum on 3 pyramids")


# --- PQ's matching ----------------------------------------------------------------

def _matching_cases():
    t = torch.zeros(8, 8, dtype=torch.int64)
    t[0:4, 0:4], t[4:8, 4:8], t[0:2, 6:8] = 1, 2, 3
    t[6:8, 0:2] = 7  # a void band below is 0
    p = torch.zeros(8, 8, dtype=torch.int64)
    p[0:4, 0:3] = 5  # IoU 12/16 with 1
    p[4:8, 4:6] = 6  # IoU 8/16 = 0.5 with 2: no match
    p[0:3, 6:8] = 8  # 4 of 6 on 3: IoU 4/6
    cases = [(t, p, 0)]
    # Predictions mostly on void are not false positives.
    t2 = torch.zeros(6, 6, dtype=torch.int64)
    t2[:3] = 1
    p2 = torch.zeros(6, 6, dtype=torch.int64)
    p2[:3] = 4
    p2[3:, :4] = 9  # 12 pixels all on void
    p2[5, 4:] = 2  # 2 pixels on void
    cases.append((t2, p2, 0))
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        t = torch.randint(0, 4, (3, 3), generator=g).repeat_interleave(
            3, 0).repeat_interleave(3, 1)
        p = t.clone()
        noise = torch.rand(t.shape, generator=g) < 0.3
        p[noise] = torch.randint(0, 5, (int(noise.sum()),), generator=g)
        cases.append((t, p, 0))
    return cases


def _sorted(result):
    if not isinstance(result, dict):
        return result
    keys = ("target_ids", "pred_ids", "iou")
    if not all(isinstance(result.get(k), torch.Tensor) for k in keys):
        return result
    order = torch.argsort(result["target_ids"])
    return {**result, **{k: result[k][order] for k in keys}}


@exercise(
    forbid=[match_segments, segment_iou, PanopticQuality],
    hints=[
        "count the pixels of every (target id, predicted id) pair in one pass; "
        "areas and IoUs follow from that table; a pair matches when IoU > 0.5",
        "the IoU divides the intersection by the two areas' sum less the "
        "intersection and less the predicted pixels on target void; a match "
        "needs strictly more than 0.5; an unmatched prediction is a false "
        "positive only when at most half of it lies on void; void ids are "
        "never segments",
    ],
)
def check_match(match) -> None:
    """``match(target, pred, void)`` on ``[H, W]`` id maps of one category ->
    ``{"target_ids", "pred_ids", "iou", "fn", "fp"}`` as
    :func:`utils.metrics.match_segments`."""
    for n, (t, p, void) in enumerate(_matching_cases()):
        what = f"match on case {n}"
        got = _sorted(learner(match, t.clone(), p.clone(), void, what=what))
        expected = match_segments(t, p, void)
        if not isinstance(got, dict) or set(got) < set(expected):
            fail(f"{what}: a dict with keys target_ids, pred_ids, iou, fn, fp",
                 sorted(expected), type(got).__name__ if not isinstance(got, dict)
                 else sorted(got))
        for key in ("target_ids", "pred_ids"):
            assert_equal(torch.as_tensor(got[key]).long(), expected[key],
                         f"{what}: {key}",
                         hint="a match needs IoU strictly above 0.5" if
                         len(got[key]) > len(expected[key]) else None)
        assert_close(torch.as_tensor(got["iou"]).double(), expected["iou"],
                     f"{what}: iou", hint="the union leaves out the predicted "
                     "pixels that lie on target void")
        for key in ("fn", "fp"):
            hint = ("a prediction more than half on void is not a false positive"
                    if key == "fp" else None)
            assert_equal(torch.tensor(int(got[key])), torch.tensor(expected[key]),
                         f"{what}: {key}", hint=hint)
    ok(f"match gives PQ's matches, IoUs, FN and FP on {len(_matching_cases())} cases")
