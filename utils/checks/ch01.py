"""Checks for chapter 01 (metrics and losses)."""

from __future__ import annotations

import torch

from utils.checks.common import assert_close, assert_equal, call, fail, ok
from utils.losses import dice_loss
from utils.metrics import confusion_matrix, match_segments, metrics_from_matrix


def _labels(seed: int, shape=(2, 6, 7), num_classes: int = 5):
    """Random labels with ignored pixels; the last class never occurs."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes - 1, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = 255
    pred = torch.randint(0, num_classes, shape, generator=g)
    return pred, target


def check_confusion_matrix(fn) -> None:
    """``fn(pred, target, num_classes, ignore_index)`` -> int ``[C, C]``."""
    hint = (
        "drop the ignored pixels first, then bincount target * C + pred with "
        "minlength=C*C and reshape to [C, C] (rows = target)"
    )
    for seed in range(3):
        pred, target = _labels(seed)
        got = call(fn, pred, target, 5, 255, what="confusion_matrix_bincount",
                   hint=hint)
        if not isinstance(got, torch.Tensor) or got.is_floating_point():
            fail("confusion_matrix_bincount: wrong type", "an integer tensor",
                 f"{type(got).__name__} {getattr(got, 'dtype', '')}",
                 "torch.bincount returns int64")
        assert_equal(got, confusion_matrix(pred, target, 5, 255),
                     f"confusion matrix of random labels (seed {seed})", hint)
    ok("confusion_matrix_bincount matches utils.metrics.confusion_matrix")


def check_iou_from_matrix(fn) -> None:
    """``fn(matrix)`` -> (iou ``[C]`` with NaN for absent classes, mean IoU)."""
    hint = (
        "IoU_c = M[c, c] / (row sum + column sum - M[c, c]); NaN where that union "
        "is 0, and the mean skips NaN (torch.nanmean)"
    )
    cases = {
        "class 2 absent (IoU NaN)": torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]]),
        "class 2 only predicted (IoU 0)": torch.tensor(
            [[4, 0, 2], [1, 6, 0], [0, 0, 0]]),
        "a random matrix": confusion_matrix(*_labels(7), 5, 255),
    }
    for name, m in cases.items():
        iou, miou = call(fn, m, what="iou_from_matrix", hint=hint)
        expected = metrics_from_matrix(m)
        assert_close(iou, expected["iou"], f"per-class IoU, {name}", hint)
        assert_close(float(miou), float(expected["mean_iou"]), f"mean IoU, {name}",
                     hint)
    ok("iou_from_matrix matches utils.metrics, absent classes included")


def check_dice_loss(fn) -> None:
    """``fn(logits, target, ignore_index, smooth)`` -> plain soft Dice loss."""
    hint = (
        "softmax over dim 1, one-hot the target, zero both at ignored pixels, sum "
        "over every dim but the class one, then 1 - mean_c (2 I_c + s) / "
        "(sum p_c + sum g_c + s)"
    )
    g = torch.Generator().manual_seed(0)
    for smooth in (1.0, 0.0):
        logits = torch.randn(2, 4, 5, 6, generator=g)
        _, target = _labels(int(smooth) + 3, (2, 5, 6), 4)
        mine = logits.clone().requires_grad_()
        ref = logits.clone().requires_grad_()
        got = call(fn, mine, target, 255, smooth, what="soft_dice_loss", hint=hint)
        expected = dice_loss(ref, target, 255, squared=False, smooth=smooth)
        assert_close(got.detach(), expected.detach(),
                     f"Dice loss value (smooth={smooth})", hint)
        got.backward()
        expected.backward()
        assert_close(mine.grad, ref.grad, f"Dice loss gradient (smooth={smooth})",
                     "build the loss from differentiable torch ops only")
    ok("soft_dice_loss matches utils.losses.dice_loss, gradient included")


def check_match_segments(fn) -> None:
    """``fn(target, pred, void)`` -> list of (target id, pred id, IoU)."""
    hint = (
        "skip void (id 0) on both sides and leave the predicted pixels that lie on "
        "target void out of the union"
    )
    g = torch.Generator().manual_seed(1)
    cases = []
    for _ in range(4):
        t = torch.randint(0, 4, (8, 8), generator=g)
        p = torch.where(torch.rand(8, 8, generator=g) < 0.7, t,
                        torch.randint(0, 5, (8, 8), generator=g))
        cases.append(("random maps", t, p))
    # Only the void rule makes this a match: IoU 4 / (8 + 4 - 4 - 4) = 1.
    t = torch.zeros(4, 4, dtype=torch.long)
    t[:2, :2] = 1
    p = torch.zeros_like(t)
    p[:2] = 7
    cases.append(("a prediction half on void", t, p))
    for name, t, p in cases:
        ref = match_segments(t, p, void=0)
        expected = list(zip(ref["target_ids"].tolist(), ref["pred_ids"].tolist(),
                            ref["iou"].tolist()))
        got = call(fn, t, p, 0, what="match_segments_by_iou", hint=hint)
        got = sorted((int(a), int(b), float(c)) for a, b, c in got)
        same = len(got) == len(expected) and all(
            a == x and b == y and abs(c - z) < 1e-9
            for (a, b, c), (x, y, z) in zip(got, expected))
        if not same:
            fail(f"matches (target id, pred id, IoU) for {name}", expected, got, hint)
    ok("match_segments_by_iou matches utils.metrics.match_segments")
