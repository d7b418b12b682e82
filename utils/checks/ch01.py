"""Checks for chapter 01 (metrics and losses).

Each compares the learner's function with the course's own implementation on
fixed inputs and refuses that implementation as an answer (see
:mod:`utils.checks.common`).
"""

from __future__ import annotations

import torch

from utils.checks.common import (
    assert_close,
    assert_equal,
    exercise,
    fail,
    learner,
    ok,
    reshape_sizes,
)
from utils.losses import dice_loss
from utils.metrics import (
    ConfusionMatrix,
    PanopticQuality,
    confusion_matrix,
    match_segments,
    metrics_from_matrix,
    per_image_confusion,
)
from utils.metrics import confusion as _confusion
from utils.metrics import panoptic as _panoptic


def _labels(seed: int, shape=(2, 6, 7), num_classes: int = 5):
    """Random labels with ignored pixels; the last class never occurs."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes - 1, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = 255
    pred = torch.randint(0, num_classes, shape, generator=g)
    return pred, target


@exercise(
    forbid=[confusion_matrix, per_image_confusion, ConfusionMatrix,
            _confusion._counts],
    hints=[
        "give every (target, prediction) pair a bin number of its own, so that "
        "one counting pass over the pixels fills the whole matrix",
        "leave the ignored pixels out before counting, and ask for all C*C bins "
        "even when some pairs never occur",
    ],
)
def check_confusion_matrix(fn) -> None:
    """``fn(pred, target, num_classes, ignore_index)`` -> int ``[C, C]``."""
    for seed in range(3):
        pred, target = _labels(seed)
        what = f"confusion matrix of random labels (seed {seed})"
        got = learner(fn, pred.clone(), target.clone(), 5, 255, what=what,
                      diagnose=lambda err: _bins_hint(err, 5))
        expected = confusion_matrix(pred, target, 5, 255)
        if isinstance(got, torch.Tensor) and got.ndim == 1:
            fail(f"{what}: wrong shape", list(expected.shape), list(got.shape),
                 hint=_bins_hint(f"shape '[5, 5]' is invalid for input of size "
                                 f"{got.numel()}", 5) or "the bins are the "
                 "matrix read row by row: give them its two dimensions back")
        if isinstance(got, torch.Tensor) and got.is_floating_point():
            fail(f"{what}: wrong dtype", "an integer tensor (counts)", got.dtype,
                 hint="counting gives integers: no float conversion needed")
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            if torch.equal(got, expected.T):
                hint = "this is the transpose: rows are the target, columns the " \
                       "prediction"
            elif int(got.sum()) > int(expected.sum()):
                hint = f"{int(got.sum())} pixels counted, but only " \
                       f"{int(expected.sum())} are not ignored"
        assert_equal(got, expected, what, hint=hint)
    ok("confusion_matrix_bincount is right, ignored pixels and absent classes "
       "included")


def _bins_hint(err, C: int) -> str | None:
    """What a bin count other than C*C says about a one-bincount confusion
    matrix (the learner reshapes it to [C, C]; torch names the count)."""
    sizes = reshape_sizes(err)
    if sizes is None:
        return None
    n = sizes[1]
    if n - 1 >= 255 * C:
        return (f"{n} bins: the largest bin is target * C + prediction for a "
                f"pixel whose target is 255 (255 * {C} + {n - 1 - 255 * C} = "
                f"{n - 1}), so the ignored pixels were counted; leave them out "
                "before counting")
    if n > C * C:
        return (f"{n} bins, not {C * C}: a value past the last bin was counted; "
                "are the ignored pixels left out, and is every bin "
                "target * C + prediction?")
    if n < C * C:
        return (f"only {n} bins, not {C * C}: bincount returns one bin past the "
                "largest value it sees, and the last pairs never occur here; ask "
                f"it for all {C * C} bins (its minlength)")
    return None


@exercise(
    forbid=[metrics_from_matrix, ConfusionMatrix],
    hints=[
        "read each class's true positives off the diagonal, and its target and "
        "predicted pixels off the row and column sums",
        "a class with an empty union has no IoU (NaN), and the mean leaves those "
        "out: torch has a NaN-skipping mean",
    ],
)
def check_iou_from_matrix(fn) -> None:
    """``fn(matrix)`` -> (iou ``[C]`` with NaN for absent classes, mean IoU)."""
    cases = {
        "class 2 absent (IoU NaN)": torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]]),
        "class 2 only predicted (IoU 0)": torch.tensor(
            [[4, 0, 2], [1, 6, 0], [0, 0, 0]]),
        "a random matrix": confusion_matrix(*_labels(7), 5, 255),
    }
    for name, m in cases.items():
        got = learner(fn, m.clone(), what=f"iou_from_matrix, {name}")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            fail(f"iou_from_matrix, {name}: wrong result",
                 "a pair (per-class IoU, mean IoU)", type(got).__name__)
        iou, miou = got
        expected = metrics_from_matrix(m)
        hint = None
        absent = expected["iou"].isnan()
        if isinstance(iou, torch.Tensor) and iou.shape == absent.shape \
                and absent.any() and not iou[absent].isnan().all():
            hint = "a class that neither occurs nor is predicted has no IoU: NaN, " \
                   "not 0, and the mean leaves it out"
        assert_close(iou, expected["iou"], f"per-class IoU, {name}", hint=hint)
        try:
            miou = float(miou)
        except (TypeError, ValueError, RuntimeError):
            fail(f"mean IoU, {name}: wrong type", "a float", type(miou).__name__)
        if miou != miou:  # NaN
            fail(f"mean IoU, {name}", float(expected["mean_iou"]), miou,
                 hint="the plain mean of values with a NaN is NaN: skip the NaN")
        assert_close(miou, float(expected["mean_iou"]), f"mean IoU, {name}")
    ok("iou_from_matrix is right, absent and only-predicted classes included")


@exercise(
    forbid=[dice_loss],
    hints=[
        "probabilities (a softmax over the class dimension) against one-hot "
        "targets; sum the intersections and the sizes over the batch and the "
        "pixels, separately for each class",
        "ignored pixels count on neither side: zero them in the probabilities and "
        "in the one-hot targets (one-hot encoding needs valid class indices, so "
        "replace the ignored labels first)",
    ],
)
def check_dice_loss(fn) -> None:
    """``fn(logits, target, ignore_index, smooth)`` -> plain soft Dice loss."""
    g = torch.Generator().manual_seed(0)
    for smooth in (1.0, 0.0):
        logits = torch.randn(2, 4, 5, 6, generator=g)
        _, target = _labels(int(smooth) + 3, (2, 5, 6), 4)
        mine = logits.clone().requires_grad_()
        ref = logits.clone().requires_grad_()
        what = f"Dice loss (smooth={smooth})"
        got = learner(fn, mine, target.clone(), 255, smooth, what=what)
        expected = dice_loss(ref, target, 255, squared=False, smooth=smooth)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            fail(f"{what}: wrong result", "a scalar tensor",
                 f"{type(got).__name__} {list(getattr(got, 'shape', []))}")
        hint = None
        squared = dice_loss(logits, target, 255, squared=True, smooth=smooth)
        if torch.allclose(got.detach().reshape(()), squared, atol=1e-6):
            hint = "that is the squared (V-Net) denominator; this exercise asks " \
                   "for the plain sums of p and g"
        assert_close(got.detach().reshape(()), expected.detach(), f"{what}: value",
                     hint=hint)
        if not got.requires_grad:
            fail(f"{what}: no gradient", "a loss that autograd can differentiate",
                 "a tensor without grad_fn", hint="build it from torch operations "
                 "on the logits only (no .item(), no NumPy, no torch.no_grad)")
        learner(got.sum().backward, what=f"{what}: backward")
        expected.backward()
        assert_close(mine.grad, ref.grad, f"{what}: gradient", atol=1e-6,
                     hint="the value is right but not its gradient: is a part of "
                          "it detached or computed outside torch?")
    ok("soft_dice_loss is right, its gradient included")


@exercise(
    forbid=[match_segments, _panoptic.segment_iou, PanopticQuality],
    hints=[
        "compare every target segment with every predicted segment; a pair "
        "matches when its IoU exceeds 0.5",
        "void is a segment on neither side, and the predicted pixels that lie on "
        "target void are left out of the union",
    ],
)
def check_match_segments(fn) -> None:
    """``fn(target, pred, void)`` -> list of (target id, pred id, IoU)."""
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
    # Two predictions each cover half of target segment 1: IoU exactly 0.5
    # twice. Only "more than half" keeps the match unique.
    t = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2]])
    p = torch.tensor([[5, 6, 8, 8], [5, 6, 8, 8]])
    cases.append(("two predictions at IoU exactly 0.5", t, p))
    for name, t, p in cases:
        ref = match_segments(t, p, void=0)
        expected = sorted(zip(ref["target_ids"].tolist(), ref["pred_ids"].tolist(),
                              ref["iou"].tolist()))
        what = f"match_segments_by_iou, {name}"
        got = learner(fn, t.clone(), p.clone(), 0, what=what)
        try:
            got = sorted((int(a), int(b), float(c)) for a, b, c in got)
        except (TypeError, ValueError):
            fail(f"{what}: wrong result",
                 "a list of (target id, pred id, IoU)", _type_name(got))
        same = len(got) == len(expected) and all(
            a == x and b == y and abs(c - z) < 1e-9
            for (a, b, c), (x, y, z) in zip(got, expected))
        if not same:
            hint = None
            if name == "a prediction half on void" and not got:
                hint = "this pair matches only when the predicted pixels on " \
                       "target void are left out of the union"
            elif any(c == 0.5 for _, _, c in got):
                hint = "a pair at IoU exactly 0.5 is not a match: here two " \
                       "predictions cover half of one segment each, and both " \
                       "would match it; only strictly more than half makes a " \
                       "match unique (the proof above)"
            fail(f"matches (target id, pred id, IoU) for {name}", expected, got,
                 hint=hint)
    ok("match_segments_by_iou is right, the void rule included")


def _type_name(value) -> str:
    return type(value).__name__
