"""Chapter 01's checks pass independent correct answers (written here, not the
course's copies), refuse the course's own code, and name plausible mistakes."""

import torch
import torch.nn.functional as F
from check_helpers import fails, passes

from utils.checks import ch01
from utils.losses import dice_loss
from utils.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    match_segments,
    metrics_from_matrix,
)


def confusion_loop(pred, target, C, ignore):
    m = torch.zeros(C, C, dtype=torch.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != ignore:
            m[t, p] += 1
    return m


def iou_loop(m):
    C = m.shape[0]
    iou = torch.empty(C, dtype=torch.float64)
    for c in range(C):
        union = int(m[c].sum() + m[:, c].sum() - m[c, c])
        iou[c] = float("nan") if union == 0 else int(m[c, c]) / union
    present = [v for v in iou.tolist() if v == v]
    return iou, sum(present) / len(present)


def dice_own(logits, target, ignore, smooth, squared=False):
    C = logits.shape[1]
    valid = (target != ignore)[:, None].float()
    p = logits.softmax(1) * valid
    g = F.one_hot(target.masked_fill(target == ignore, 0), C).permute(0, 3, 1, 2)
    g = g.float() * valid
    inter = (p * g).sum((0, 2, 3))
    if squared:
        p, g = p * p, g * g
    size = p.sum((0, 2, 3)) + g.sum((0, 2, 3))
    return 1 - ((2 * inter + smooth) / (size + smooth)).mean()


def matches_loop(t, p, void, void_rule=True, threshold=0.5, strict=True):
    out = []
    for a in set(t.flatten().tolist()) - {void}:
        for b in set(p.flatten().tolist()) - {void}:
            inter = int(((t == a) & (p == b)).sum())
            union = int(((t == a) | (p == b)).sum())
            if void_rule:
                union -= int(((t == void) & (p == b)).sum())
            iou = inter / union
            if iou > threshold or (not strict and iou == threshold):
                out.append((a, b, iou))
    return out


def test_the_checks_pass_independent_answers(capsys):
    passes(capsys, (ch01.check_confusion_matrix, confusion_loop),
           (ch01.check_iou_from_matrix, iou_loop),
           (ch01.check_dice_loss, dice_own),
           (ch01.check_match_segments, matches_loop))


def test_the_checks_refuse_the_course_s_own_code():
    fails(ch01.check_confusion_matrix, confusion_matrix, "confusion_matrix")

    def through_the_accumulator(pred, target, C, ignore):
        cm = ConfusionMatrix(C, ignore)
        cm.update(pred, target)
        return cm.matrix

    fails(ch01.check_confusion_matrix, through_the_accumulator, "your code calls")
    fails(ch01.check_iou_from_matrix, lambda m: (
        metrics_from_matrix(m)["iou"], metrics_from_matrix(m)["mean_iou"]),
        "metrics_from_matrix")
    fails(ch01.check_dice_loss, lambda z, t, i, s: dice_loss(z, t, i, smooth=s),
          "dice_loss")

    def via_reference(t, p, void):
        r = match_segments(t, p, void)
        return zip(r["target_ids"].tolist(), r["pred_ids"].tolist(),
                   r["iou"].tolist())

    fails(ch01.check_match_segments, via_reference, "match_segments")


def confusion_bincount(pred, target, C, ignore, drop_ignored=True, minlength=True):
    """One bincount, with the two instructive mistakes as options."""
    if drop_ignored:
        keep = target != ignore
        pred, target = pred[keep], target[keep]
    bins = target.flatten() * C + pred.flatten()
    counts = torch.bincount(bins, minlength=C * C if minlength else 0)
    return counts.reshape(C, C)


def test_the_instructive_bincount_mistakes_are_diagnosed():
    # The ignored pixels counted: 1280 bins for C = 5 (255 * 5 + 4 + 1).
    text = fails(ch01.check_confusion_matrix,
                 lambda p, t, C, i: confusion_bincount(p, t, C, i, drop_ignored=False),
                 "raised RuntimeError", "255 * 5", "leave them out")
    assert "Traceback" not in text
    fails(ch01.check_confusion_matrix,
          lambda p, t, C, i: confusion_bincount(p, t, C, i, minlength=False),
          "only 20 bins, not 25", "minlength")
    # Flat counts, not reshaped.
    fails(ch01.check_confusion_matrix,
          lambda p, t, C, i: confusion_bincount(p, t, C, i).flatten(),
          "wrong shape", "two dimensions")


def test_matching_at_iou_exactly_one_half_is_refused():
    def matches_at_least_half(t, p, void):
        return [m for m in matches_loop(t, p, void, threshold=0.5, strict=False)]
    fails(ch01.check_match_segments, matches_at_least_half, "exactly 0.5",
          "strictly more than half")


def test_the_checks_name_plausible_mistakes():
    fails(ch01.check_confusion_matrix, lambda p, t, C, i: confusion_loop(p, t, C, i).T,
          "transpose", "rows are the target")
    fails(ch01.check_confusion_matrix,
          lambda p, t, C, i: confusion_loop(p, t.clamp(max=C - 1), C, i),
          "pixels counted", "not ignored")
    fails(ch01.check_confusion_matrix,
          lambda p, t, C, i: confusion_loop(p, t, C, i).float(), "wrong dtype")
    fails(ch01.check_iou_from_matrix,
          lambda m: (iou_loop(m)[0].nan_to_num(0.0), iou_loop(m)[0].nan_to_num(0.0)
                     .mean()), "NaN, not 0")
    fails(ch01.check_iou_from_matrix, lambda m: (iou_loop(m)[0],
                                                 float(iou_loop(m)[0].mean())),
          "skip the NaN")
    fails(ch01.check_dice_loss,
          lambda z, t, i, s: dice_own(z, t, i, s, squared=True), "squared (V-Net)")
    fails(ch01.check_dice_loss,
          lambda z, t, i, s: dice_own(z.detach(), t, i, s),
          "no gradient")
    fails(ch01.check_match_segments,
          lambda t, p, v: matches_loop(t, p, v, void_rule=False), "void")
