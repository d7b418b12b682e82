"""Checks for the exercises of chapter 01 (metrics and losses).

Each check runs the learner's function on fixed inputs, compares it with the
canonical version in ``utils``, prints one line starting with "✓ " when it
agrees and raises ``AssertionError`` with what was expected, what came back and
a hint when it does not.
"""

from __future__ import annotations

import torch

from utils.losses import dice_loss
from utils.metrics import confusion_matrix, match_segments, metrics_from_matrix


def ok(message: str) -> None:
    print(f"✓ {message}")


def assert_close(got, expected, what: str, hint: str, atol: float = 1e-6) -> None:
    """Tensors (or numbers) equal up to ``atol``, NaN where NaN is expected."""
    got_t = torch.as_tensor(got, dtype=torch.float64)
    exp_t = torch.as_tensor(expected, dtype=torch.float64)
    if got_t.shape != exp_t.shape or not torch.allclose(
        got_t, exp_t, atol=atol, rtol=0, equal_nan=True
    ):
        raise AssertionError(
            f"{what}: expected {exp_t.tolist()}, got {got_t.tolist()}. Hint: {hint}"
        )


def _labels(seed: int, shape=(2, 6, 7), num_classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes - 1, shape, generator=g)  # last class absent
    target[torch.rand(shape, generator=g) < 0.2] = 255
    pred = torch.randint(0, num_classes, shape, generator=g)
    return pred, target


def check_confusion_matrix(fn) -> None:
    """``fn(pred, target, num_classes, ignore_index)`` -> int ``[C, C]``."""
    for seed in range(3):
        pred, target = _labels(seed)
        got = fn(pred, target, 5, 255)
        expected = confusion_matrix(pred, target, 5, 255)
        if not isinstance(got, torch.Tensor) or got.is_floating_point():
            raise AssertionError(
                f"expected an integer tensor, got {type(got).__name__} "
                f"{getattr(got, 'dtype', '')}. Hint: torch.bincount returns int64."
            )
        assert_close(got, expected, f"confusion matrix (seed {seed})",
                     "drop the ignored pixels first, then bincount target * C + pred "
                     "with minlength=C*C and reshape to [C, C] (rows = target).")
    ok("confusion_matrix_bincount matches utils.metrics.confusion_matrix")


def check_iou_from_matrix(fn) -> None:
    """``fn(matrix)`` -> (iou ``[C]`` with NaN for absent classes, mean IoU)."""
    matrices = [
        torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]]),  # class 2 absent: NaN
        torch.tensor([[4, 0, 2], [1, 6, 0], [0, 0, 0]]),  # class 2 predicted only: 0
        confusion_matrix(*_labels(7), 5, 255),
    ]
    for m in matrices:
        iou, miou = fn(m)
        expected = metrics_from_matrix(m)
        hint = ("IoU_c = M[c, c] / (row sum + column sum - M[c, c]); NaN where the "
                "union is 0; the mean skips NaN (torch.nanmean).")
        assert_close(iou, expected["iou"], f"iou of {m.tolist()}", hint)
        assert_close(float(miou), float(expected["mean_iou"]),
                     f"mean IoU of {m.tolist()}", hint)
    ok("iou_from_matrix matches utils.metrics, including absent classes")


def check_dice_loss(fn) -> None:
    """``fn(logits, target, ignore_index, smooth)`` -> plain soft Dice loss."""
    g = torch.Generator().manual_seed(0)
    for smooth in (1.0, 0.0):
        logits = torch.randn(2, 4, 5, 6, generator=g)
        _, target = _labels(int(smooth) + 3, (2, 5, 6), 4)
        mine = logits.clone().requires_grad_()
        ref = logits.clone().requires_grad_()
        got = fn(mine, target, 255, smooth)
        expected = dice_loss(ref, target, 255, squared=False, smooth=smooth)
        hint = ("softmax over dim 1, one-hot the target, zero both at ignored "
                "pixels, sum over every dim but the class one, then "
                "1 - mean_c (2 I_c + s) / (sum p_c + sum g_c + s).")
        assert_close(got.item(), expected.item(), f"Dice loss (smooth={smooth})", hint)
        got.backward()
        expected.backward()
        assert_close(mine.grad, ref.grad, "the gradient of your Dice loss",
                     "build the loss from differentiable torch ops only.", atol=1e-6)
    ok("soft_dice_loss matches utils.losses.dice_loss, gradient included")


def check_match_segments(fn) -> None:
    """``fn(target, pred, void)`` -> list of (target id, pred id, IoU), sorted."""
    g = torch.Generator().manual_seed(1)
    cases = []
    for _ in range(4):
        t = torch.randint(0, 4, (8, 8), generator=g)
        p = torch.where(torch.rand(8, 8, generator=g) < 0.7, t,
                        torch.randint(0, 5, (8, 8), generator=g))
        cases.append((t, p))
    # Void decides this one: IoU 4 / (8 + 4 - 4 - 4) = 1 with void left out.
    t = torch.zeros(4, 4, dtype=torch.long)
    t[:2, :2] = 1
    p = torch.zeros_like(t)
    p[:2] = 7
    cases.append((t, p))
    for t, p in cases:
        ref = match_segments(t, p, void=0)
        expected = list(zip(ref["target_ids"].tolist(), ref["pred_ids"].tolist(),
                            ref["iou"].tolist()))
        got = sorted((int(a), int(b), float(c)) for a, b, c in fn(t, p, 0))
        same = len(got) == len(expected) and all(
            a == x and b == y and abs(c - z) < 1e-9
            for (a, b, c), (x, y, z) in zip(got, expected))
        if not same:
            raise AssertionError(
                f"for target {t.tolist()} and pred {p.tolist()}: expected matches "
                f"{expected}, got {got}. Hint: skip void (id 0) on both sides and "
                "leave the predicted pixels on target void out of the union.")
    ok("match_segments_by_iou matches utils.metrics.match_segments")
