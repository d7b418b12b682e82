"""COCO mask AP on hand-worked cases (the randomized comparison with pycocotools
is run outside the test suite, which does not depend on pycocotools)."""

import math

import numpy as np
import pytest
import torch

from utils.metrics import mask_ap, mask_iou
from utils.metrics.mask_ap import IOU_THRESHOLDS, match_detections

H = W = 8
ONE = pytest.approx(1.0, abs=1e-12)  # precision is tp / (tp + fp + eps)


def box(y0, x0, y1, x1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


A, B, Cm = box(0, 0, 4, 4), box(4, 4, 8, 8), box(0, 4, 4, 8)


def pred(masks, scores, labels):
    return {"masks": torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=bool),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.long)}


def target(masks, labels):
    return {"masks": torch.stack(masks).to(torch.uint8) if masks else
            torch.zeros(0, H, W, dtype=torch.uint8),
            "labels": torch.tensor(labels, dtype=torch.long)}


def test_perfect_detection():
    out = mask_ap([pred([A], [0.9], [1])], [target([A], [1])])
    # COCOeval divides by tp + fp + eps, so "1" is 1 - 2e-16.
    assert [out["ap"], out["ap50"], out["ap75"]] == pytest.approx([1, 1, 1], abs=1e-12)


def test_ties_in_score_keep_input_order():
    # Equal scores: the false positive listed first ranks first, so at full
    # recall precision is 1/2 everywhere; listed second, AP is 1.
    fp_first = mask_ap([pred([B, A], [0.9, 0.9], [1, 1])], [target([A], [1])])
    tp_first = mask_ap([pred([A, B], [0.9, 0.9], [1, 1])], [target([A], [1])])
    assert fp_first["ap"] == pytest.approx(0.5, abs=1e-12)
    assert tp_first["ap"] == ONE
    # Across images, ties rank by image order.
    across = mask_ap([pred([B], [0.9], [1]), pred([A], [0.9], [1])],
                     [target([], []), target([A], [1])])
    assert across["ap"] == pytest.approx(0.5, abs=1e-12)


def test_unmatched_ground_truth_caps_recall():
    out = mask_ap([pred([A], [0.9], [1])], [target([A, B], [1, 1])])
    # Recall reaches 0.5 with precision 1: 51 of the 101 recall points.
    assert out["ap"] == pytest.approx(51 / 101, abs=1e-12)


def test_empty_images():
    tp = pred([A], [0.9], [1])
    gt = target([A], [1])
    empty_pred, empty_gt = pred([], [], []), target([], [])
    assert mask_ap([tp, empty_pred], [gt, empty_gt])["ap"] == ONE
    # A false positive in an image without ground truth counts, by its score.
    assert mask_ap([tp, pred([B], [0.5], [1])], [gt, empty_gt])["ap"] == ONE
    assert mask_ap([tp, pred([B], [0.95], [1])], [gt, empty_gt])["ap"] == \
        pytest.approx(0.5, abs=1e-12)
    # Nothing anywhere: no class has ground truth, AP is undefined.
    assert math.isnan(mask_ap([empty_pred], [empty_gt])["ap"])


def test_class_without_predictions_scores_zero_and_class_without_gt_is_nan():
    out = mask_ap([pred([A, Cm], [0.9, 0.8], [1, 3])], [target([A, B], [1, 2])])
    assert out["per_class"][1] == ONE
    assert out["per_class"][2] == 0.0  # ground truth, no prediction
    assert math.isnan(out["per_class"][3])  # prediction, no ground truth
    assert out["ap"] == pytest.approx(0.5, abs=1e-12)


def test_iou_threshold_is_inclusive():
    # IoU 12 / 16 = 0.75 exactly: a match at 0.50 ... 0.75, six thresholds.
    det = box(0, 0, 4, 3)  # 12 pixels inside A (16)
    out = mask_ap([pred([det], [0.9], [1])], [target([A], [1])])
    assert int((IOU_THRESHOLDS <= 0.75).sum()) == 6
    assert out["ap"] == pytest.approx(0.6, abs=1e-12)
    assert out["ap50"] == ONE and out["ap75"] == ONE


def test_at_most_max_dets_per_image_and_class():
    fps = [B] * 100
    masks, scores = [*fps, A], [0.9] * 100 + [0.1]
    out = mask_ap([pred(masks, scores, [1] * 101)], [target([A], [1])])
    assert out["ap"] == 0.0  # the true positive is the 101st detection
    out = mask_ap([pred(masks, scores, [1] * 101)], [target([A], [1])], max_dets=101)
    assert out["ap"] == pytest.approx(1 / 101, abs=1e-12)


def test_greedy_matching_takes_best_unmatched_gt_later_on_ties():
    ious = np.array([[0.6, 0.6], [0.6, 0.0]])
    # Detection 0 takes gt 1 (the later of two equal IoUs), leaving gt 0 for
    # detection 1: both are true positives at 0.5.
    assert match_detections(ious)[0].tolist() == [True, True]
    assert match_detections(ious)[-1].tolist() == [False, False]


def test_mask_iou_by_hand_and_empty():
    ious = mask_iou(torch.stack([A, box(0, 0, 4, 3)]), torch.stack([A, B, A & B]))
    assert ious.tolist() == [[1.0, 0.0, 0.0], [0.75, 0.0, 0.0]]  # empty vs empty: 0
    assert mask_iou(torch.zeros(0, H, W), torch.stack([A])).shape == (0, 1)


def test_bad_input():
    with pytest.raises(ValueError, match="2 predictions for 1"):
        mask_ap([pred([A], [0.9], [1])] * 2, [target([A], [1])])
    with pytest.raises(ValueError, match="1 masks, 2 scores"):
        mask_ap([pred([A], [0.9, 0.8], [1])], [target([A], [1])])
    soft = {"masks": torch.rand(1, H, W), "scores": torch.ones(1),
            "labels": torch.ones(1, dtype=torch.long)}
    with pytest.raises(ValueError, match="bool or uint8"):
        mask_ap([soft], [target([A], [1])])


def coco_loop(ious, thresholds):
    """COCOeval.evaluateImg's matching loop, transcribed."""
    D, G = ious.shape
    matched = np.zeros((len(thresholds), D), dtype=bool)
    for ti, t in enumerate(thresholds):
        gtm = np.zeros(G, dtype=bool)
        for d in range(D):
            iou, m = min(t, 1 - 1e-10), -1
            for g in range(G):
                if gtm[g]:
                    continue
                if ious[d, g] < iou:
                    continue
                iou, m = ious[d, g], g
            if m >= 0:
                gtm[m] = True
                matched[ti, d] = True
    return matched


def test_vectorised_matching_equals_cocoeval_loop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        D, G = rng.integers(0, 8, 2)
        # Coarse values make ties and exact threshold hits common.
        ious = np.round(rng.random((D, G)), 1) * (rng.random((D, G)) < 0.7)
        assert np.array_equal(match_detections(ious), coco_loop(ious, IOU_THRESHOLDS))
