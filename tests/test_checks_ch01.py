"""The chapter 01 checks accept the reference solutions and reject wrong ones."""

import pytest
import torch

from utils.checks import ch01
from utils.losses import dice_loss
from utils.metrics import confusion_matrix, match_segments, metrics_from_matrix


def test_checks_pass_on_reference_solutions(capsys):
    ch01.check_confusion_matrix(confusion_matrix)
    ch01.check_iou_from_matrix(
        lambda m: (metrics_from_matrix(m)["iou"], metrics_from_matrix(m)["mean_iou"]))
    ch01.check_dice_loss(lambda z, t, ignore, s: dice_loss(z, t, ignore, smooth=s))

    def matches(t, p, void):
        r = match_segments(t, p, void)
        return zip(r["target_ids"].tolist(), r["pred_ids"].tolist(), r["iou"].tolist())

    ch01.check_match_segments(matches)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("✓ ") for line in lines)


def test_checks_reject_common_mistakes():
    def no_ignore(pred, target, C, ignore):  # forgets to drop the ignored pixels
        keep = target < C
        return torch.bincount(target[keep] * C + pred[keep], minlength=C * C).reshape(
            C, C).T  # and transposes
    with pytest.raises(AssertionError, match="hint"):
        ch01.check_confusion_matrix(no_ignore)

    def absent_as_zero(m):
        iou = metrics_from_matrix(m)["iou"].nan_to_num(0.0)
        return iou, iou.mean()
    with pytest.raises(AssertionError, match="NaN"):
        ch01.check_iou_from_matrix(absent_as_zero)

    def squared_form(z, t, ignore, s):  # the other denominator
        return dice_loss(z, t, ignore, squared=True, smooth=s)
    with pytest.raises(AssertionError, match="Dice"):
        ch01.check_dice_loss(squared_form)

    def void_in_union(t, p, void):
        out = []
        for a in t.unique().tolist():
            for b in p.unique().tolist():
                if a != void and b != void:
                    i = ((t == a) & (p == b)).sum().item()
                    u = ((t == a) | (p == b)).sum().item()
                    if i / u > 0.5:
                        out.append((a, b, i / u))
        return out
    with pytest.raises(AssertionError, match="void"):
        ch01.check_match_segments(void_in_union)
