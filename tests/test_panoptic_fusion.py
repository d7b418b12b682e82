"""Panoptic fusion (utils.models.panoptic.fusion): each rule on a hand-made
case, the thresholds on both sides, and a per-pixel reference loop on random
detections."""

import pytest
import torch

from utils.models.panoptic import FusionConfig, add_stuff, panoptic_fusion, paste_things

VOID = 255
STUFF = (0, 1)  # two stuff categories; things are 3 and 4
LOOSE = FusionConfig(score_thresh=0.5, overlap_thresh=0.5, stuff_min_area=0)


def box_mask(H, W, y0, y1, x0, x1):
    m = torch.zeros(H, W)
    m[y0:y1, x0:x1] = 0.9
    return m


def test_overlapping_instances_best_score_first_then_free_pixels_only():
    # A 4x4 square (score 0.6) and a 4x4 square (score 0.9) sharing a 2x4 band:
    # the better one is pasted whole, the other only on its 8 free pixels.
    a = box_mask(8, 8, 0, 4, 0, 4)
    b = box_mask(8, 8, 2, 6, 0, 4)
    out = paste_things(torch.stack([a, b]), torch.tensor([0.6, 0.9]),
                       torch.tensor([3, 4]), LOOSE)
    assert out.shape == (8, 8, 2) and out.dtype == torch.int64
    assert (out[2:6, 0:4, 0] == 4).all() and (out[2:6, 0:4, 1] == 1).all()
    assert (out[0:2, 0:4, 0] == 3).all() and (out[0:2, 0:4, 1] == 2).all()
    assert (out[:, 4:, 0] == VOID).all() and (out[6:, :, 0] == VOID).all()
    assert int((out[..., 0] != VOID).sum()) == 16 + 8


def test_a_mostly_covered_instance_is_dropped_and_half_is_kept():
    big = box_mask(8, 8, 0, 8, 0, 8)
    inside = box_mask(8, 8, 0, 3, 0, 3)  # 9 pixels, all taken: 9/9 > 0.5
    half = box_mask(10, 10, 0, 4, 0, 4)  # on a 10x10 image, see below
    out = paste_things(torch.stack([big, inside]), torch.tensor([0.9, 0.8]),
                       torch.tensor([3, 4]), LOOSE)
    assert (out[:8, :8, 0] == 3).all() and out[..., 1].max() == 1  # dropped
    # Exactly half taken (8 of 16 pixels): not more than 0.5, so kept.
    first = box_mask(10, 10, 0, 2, 0, 4)
    out = paste_things(torch.stack([first, half]), torch.tensor([0.9, 0.8]),
                       torch.tensor([3, 4]), LOOSE)
    assert int((out[..., 0] == 4).sum()) == 8 and out[..., 1].max() == 2
    # Nine of 16 taken: dropped.
    first = box_mask(10, 10, 0, 3, 0, 3)
    out = paste_things(torch.stack([first, half]), torch.tensor([0.9, 0.8]),
                       torch.tensor([3, 4]), LOOSE)
    assert int((out[..., 0] == 4).sum()) == 0


def test_a_low_score_instance_is_dropped_and_the_threshold_itself_kept():
    masks = torch.stack([box_mask(6, 6, 0, 3, 0, 3), box_mask(6, 6, 3, 6, 3, 6)])
    out = paste_things(masks, torch.tensor([0.49, 0.5]), torch.tensor([3, 4]), LOOSE)
    assert (out[:3, :3, 0] == VOID).all()
    assert (out[3:, 3:, 0] == 4).all() and (out[3:, 3:, 1] == 1).all()


def test_mask_probabilities_are_thresholded_and_empty_masks_skipped():
    m = torch.zeros(2, 4, 4)
    m[0, 0, :] = torch.tensor([0.49, 0.5, 0.51, 1.0])  # three pixels >= 0.5
    m[1] = 0.1  # nothing >= 0.5: skipped, takes no id
    out = paste_things(m, torch.tensor([0.9, 0.95]), torch.tensor([3, 4]), LOOSE)
    assert out[0, :, 0].tolist() == [VOID, 3, 3, 3]
    assert out[0, 1:, 1].tolist() == [1, 1, 1]  # id 1: the empty one took none
    # [N, 1, H, W] (Mask R-CNN's output) and booleans work too.
    out4 = paste_things(m[:, None], torch.tensor([0.9, 0.95]), torch.tensor([3, 4]),
                        LOOSE)
    assert torch.equal(out, out4)
    outb = paste_things(m >= 0.5, torch.tensor([0.9, 0.95]), torch.tensor([3, 4]),
                        LOOSE)
    assert torch.equal(out, outb)


def test_stuff_fills_only_free_pixels_and_small_regions_stay_void():
    things = torch.full((6, 6, 2), VOID)
    things[..., 1] = 0
    things[0:2, 0:2] = torch.tensor([3, 1])
    semantic = torch.zeros(6, 6, dtype=torch.int64)  # stuff 0 everywhere ...
    semantic[4:, 4:] = 1  # ... stuff 1 on 4 pixels
    semantic[0, 5] = 4  # a thing pixel no detection covers
    cfg = FusionConfig(stuff_min_area=5)
    out = add_stuff(things, semantic, STUFF, cfg)
    assert (out[0:2, 0:2, 0] == 3).all() and (out[0:2, 0:2, 1] == 1).all()
    assert (out[4:, 4:, 0] == VOID).all()  # 4 < 5 pixels: dropped
    assert out[0, 5, 0] == VOID  # claimed by nothing
    stuff0 = out[..., 0] == 0
    assert int(stuff0.sum()) == 36 - 4 - 4 - 1 and (out[stuff0][:, 1] == 0).all()
    # At the minimum area itself the region is kept.
    out = add_stuff(things, semantic, STUFF, FusionConfig(stuff_min_area=4))
    assert (out[4:, 4:, 0] == 1).all()
    # The area counted is what is left after the things, not the whole region
    # (and per class, as detectron2: not per connected region).
    semantic[4:, 4:] = 0
    semantic[0:2, 0:3] = 1  # 6 pixels of stuff 1, 4 of them under the thing
    out = add_stuff(things, semantic, STUFF, FusionConfig(stuff_min_area=5))
    assert out[0, 2, 0] == VOID and out[1, 2, 0] == VOID


def reference_fusion(semantic, masks, scores, cats, stuff, cfg):
    """Per-pixel loops, written from the rules' text."""
    H, W = len(semantic), len(semantic[0])
    out = [[[VOID, 0] for _ in range(W)] for _ in range(H)]
    ranked = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    next_id = 1
    for i in ranked:
        if scores[i] < cfg.score_thresh:
            continue
        pix = [(y, x) for y in range(H) for x in range(W)
               if masks[i][y][x] >= cfg.mask_thresh]
        if not pix:
            continue
        taken = sum(out[y][x][0] != VOID for y, x in pix)
        if taken / len(pix) > cfg.overlap_thresh:
            continue
        for y, x in pix:
            if out[y][x][0] == VOID:
                out[y][x] = [int(cats[i]), next_id]
        next_id += 1
    for c in stuff:
        pix = [(y, x) for y in range(H) for x in range(W)
               if out[y][x][0] == VOID and semantic[y][x] == c]
        if pix and len(pix) >= cfg.stuff_min_area:
            for y, x in pix:
                out[y][x] = [c, 0]
    return torch.tensor(out)


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_per_pixel_reference_on_random_detections(seed):
    g = torch.Generator().manual_seed(seed)
    H, W, N = 12, 10, 6
    masks = torch.zeros(N, H, W)
    for i in range(N):
        y0, x0 = torch.randint(0, H - 2, (2,), generator=g).tolist()
        h, w = torch.randint(2, 7, (2,), generator=g).tolist()
        masks[i, y0:y0 + h, x0:x0 + w] = torch.rand(1, generator=g) * 0.5 + 0.4
    scores = torch.rand(N, generator=g)
    cats = torch.randint(3, 5, (N,), generator=g)
    semantic = torch.randint(0, 5, (H, W), generator=g)
    semantic[:6] = 0
    cfg = FusionConfig(score_thresh=0.3, overlap_thresh=0.4, stuff_min_area=8)
    got = panoptic_fusion(semantic, masks, scores, cats, STUFF, cfg)
    want = reference_fusion(semantic.tolist(), masks.tolist(), scores.tolist(),
                            cats.tolist(), STUFF, cfg)
    assert torch.equal(got, want)


def test_no_detections_gives_stuff_and_void_only():
    semantic = torch.tensor([[0, 0], [1, 3]])
    out = panoptic_fusion(semantic, torch.zeros(0, 1, 2, 2), torch.zeros(0),
                          torch.zeros(0, dtype=torch.int64), STUFF,
                          FusionConfig(stuff_min_area=1))
    assert out[..., 0].tolist() == [[0, 0], [1, VOID]]
    assert out[..., 1].abs().sum() == 0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="masks must be"):
        paste_things(torch.zeros(4, 4), torch.zeros(1), torch.zeros(1, dtype=int))
    with pytest.raises(ValueError, match="one per mask"):
        paste_things(torch.zeros(2, 4, 4), torch.zeros(1), torch.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="integer"):
        paste_things(torch.zeros(1, 4, 4), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="same H, W"):
        add_stuff(torch.zeros(4, 4, 2, dtype=int), torch.zeros(3, 4, dtype=int), STUFF)
    with pytest.raises(ValueError, match="overlap_thresh"):
        FusionConfig(overlap_thresh=1.5)
    with pytest.raises(ValueError, match="stuff_min_area"):
        FusionConfig(stuff_min_area=-1)
