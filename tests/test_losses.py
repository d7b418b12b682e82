"""Losses against F.cross_entropy, per-pixel loops, and the gradients derived in
chapter 01 against autograd."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.losses import (
    class_pixel_counts,
    cross_entropy,
    dice_loss,
    focal_loss,
    inverse_frequency_weights,
    median_frequency_weights,
    pixel_weighted_cross_entropy,
)

C, IGNORE = 4, 255


def batch(seed=0, shape=(2, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], C, *shape[1:], generator=g, dtype=torch.float64)
    target = torch.randint(0, C, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.25] = IGNORE
    return logits.float().requires_grad_(), target


def test_cross_entropy_matches_torch_with_ignore_and_weights():
    logits, target = batch()
    w = torch.tensor([0.5, 1.0, 2.0, 3.0])
    for kwargs in ({}, {"weight": w}):
        for reduction in ("mean", "sum", "none"):
            got = cross_entropy(logits, target, reduction=reduction, **kwargs)
            exp = F.cross_entropy(logits, target, ignore_index=IGNORE,
                                  reduction=reduction, **kwargs)
            assert torch.allclose(got, exp, atol=1e-6), (kwargs, reduction)


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    logits, target = batch(1)
    cross_entropy(logits, target).backward()
    valid = target != IGNORE
    one_hot = F.one_hot(torch.where(valid, target, 0), C).permute(0, 3, 1, 2)
    derived = (logits.softmax(1) - one_hot) * valid.unsqueeze(1) / valid.sum()
    assert torch.allclose(logits.grad, derived, atol=1e-7)


def test_all_ignored_batch_gives_zero_not_nan():
    logits, target = batch()
    target[:] = IGNORE
    for loss in (cross_entropy(logits, target), focal_loss(logits, target),
                 dice_loss(logits, target),
                 pixel_weighted_cross_entropy(logits, target,
                                              torch.ones(target.shape))):
        assert torch.isfinite(loss) and loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_pixel_weighted_cross_entropy_matches_loop():
    logits, target = batch(2)
    w = torch.rand(target.shape, generator=torch.Generator().manual_seed(3))
    got = pixel_weighted_cross_entropy(logits, target, w)
    log_p = logits.detach().double().log_softmax(1)
    total, count = 0.0, 0
    for b, y, x in np.ndindex(*target.shape):
        t = int(target[b, y, x])
        if t != IGNORE:
            total += -float(log_p[b, t, y, x]) * float(w[b, y, x])
            count += 1
    assert got.item() == pytest.approx(total / count, rel=1e-6)
    ones = pixel_weighted_cross_entropy(logits, target, torch.ones(target.shape))
    assert torch.allclose(ones, cross_entropy(logits, target))


def dice_by_loop(logits, target, squared, smooth):
    p = logits.detach().double().softmax(1)
    dices = []
    for c in range(C):
        inter = den_p = den_g = 0.0
        for b, y, x in np.ndindex(*target.shape):
            t = int(target[b, y, x])
            if t == IGNORE:
                continue
            pc, gc = float(p[b, c, y, x]), float(t == c)
            inter += pc * gc
            den_p += pc * pc if squared else pc
            den_g += gc
        dices.append((2 * inter + smooth) / (den_p + den_g + smooth))
    return 1 - sum(dices) / C


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_loss_matches_loop(squared, smooth):
    logits, target = batch(4)
    got = dice_loss(logits, target, squared=squared, smooth=smooth)
    assert got.item() == pytest.approx(dice_by_loop(logits, target, squared, smooth),
                                       rel=1e-6)


@pytest.mark.parametrize("squared", [False, True])
def test_dice_gradient_matches_derivation(squared):
    # Chapter 01: for D = (2I + s) / (S + s), I = sum p g, S = sum p + sum g
    # (plain) or sum p^2 + sum g^2 (squared),
    # dD/dp_i = (2 g_i (S + s) - (2I + s) dS/dp_i) / (S + s)^2,
    # dS/dp_i = 1 (plain) or 2 p_i (squared).
    g = torch.Generator().manual_seed(5)
    p = torch.rand(50, generator=g, dtype=torch.float64).requires_grad_()
    gt = (torch.rand(50, generator=g) < 0.4).double()
    s = 1.0
    inter = (p * gt).sum()
    S = (p * p).sum() + (gt * gt).sum() if squared else p.sum() + gt.sum()
    D = (2 * inter + s) / (S + s)
    D.backward()
    dS = 2 * p.detach() if squared else torch.ones_like(p)
    derived = (2 * gt * (S.detach() + s) - (2 * inter.detach() + s) * dS) / (
        S.detach() + s) ** 2
    assert torch.allclose(p.grad, derived, atol=1e-12)


def test_dice_loss_gradient_is_zero_at_ignored_pixels():
    logits, target = batch(6)
    dice_loss(logits, target).backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert (logits.grad[ignored] == 0).all() and (logits.grad[~ignored] != 0).any()


def test_focal_loss_reduces_to_cross_entropy_and_matches_loop():
    logits, target = batch(7)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0),
                          cross_entropy(logits, target), atol=1e-7)
    alpha = torch.tensor([0.25, 0.5, 1.0, 2.0])
    got = focal_loss(logits, target, gamma=2.0, alpha=alpha)
    p = logits.detach().double().softmax(1)
    total, count = 0.0, 0
    for b, y, x in np.ndindex(*target.shape):
        t = int(target[b, y, x])
        if t != IGNORE:
            pt = float(p[b, t, y, x])
            total += -float(alpha[t]) * (1 - pt) ** 2 * np.log(pt)
            count += 1
    assert got.item() == pytest.approx(total / count, rel=1e-5)


def test_focal_loss_gradient_matches_derivation():
    # dFL/dz = (softmax - one_hot) * [(1-pt)^g - g pt (1-pt)^(g-1) log pt],
    # per pixel (chain rule through p_t; dp_t/dz = p_t (one_hot - softmax)).
    logits, target = batch(8)
    gamma = 2.0
    focal_loss(logits, target, gamma=gamma, reduction="sum").backward()
    valid = target != IGNORE
    t = torch.where(valid, target, 0)
    p = logits.detach().double().softmax(1)
    pt = p.gather(1, t.unsqueeze(1))
    factor = (1 - pt) ** gamma - gamma * pt * (1 - pt) ** (gamma - 1) * pt.log()
    one_hot = F.one_hot(t, C).permute(0, 3, 1, 2)
    derived = (p - one_hot) * factor * valid.unsqueeze(1)
    assert torch.allclose(logits.grad.double(), derived, atol=1e-5)


def test_focal_loss_is_finite_for_confident_pixels():
    logits = torch.tensor([[[[40.0]], [[-40.0]]]], requires_grad=True)
    loss = focal_loss(logits, torch.zeros(1, 1, 1, dtype=torch.long), gamma=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_class_weights_by_loop():
    g = torch.Generator().manual_seed(9)
    labels = torch.randint(0, 3, (5, 4, 4), generator=g)  # class 3 never occurs
    labels[0] = 0  # image 0 holds class 0 only
    labels[1, 0] = IGNORE
    counts = class_pixel_counts(labels, 4)
    for n in range(5):
        for c in range(4):
            assert counts[n, c] == int((labels[n] == c).sum())
    total = counts.sum()
    present = [c for c in range(4) if counts[:, c].sum() > 0]
    inv = inverse_frequency_weights(counts)
    for c in range(4):
        exp = float(total) / (len(present) * float(counts[:, c].sum())) if (
            c in present) else 0.0
        assert float(inv[c]) == pytest.approx(exp)
    # The weighted pixels average 1.
    assert float((inv * counts.sum(0)).sum() / total) == pytest.approx(1.0)
    freq = {}
    for c in present:
        images = [n for n in range(5) if counts[n, c] > 0]
        seen = sum(float(counts[n].sum()) for n in images)
        freq[c] = float(counts[:, c].sum()) / seen
    med = float(np.median(list(freq.values())))
    mf = median_frequency_weights(counts)
    for c in range(4):
        assert float(mf[c]) == pytest.approx(med / freq[c] if c in present else 0.0)


@pytest.mark.parametrize("fn", [cross_entropy, dice_loss, focal_loss])
def test_bad_input(fn):
    logits, target = batch()
    with pytest.raises(ValueError, match=r"\[B, C, \.\.\.\]"):
        fn(logits, target[:, :3])
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        fn(logits, bad)
    with pytest.raises(ValueError, match="integer labels"):
        fn(logits, target.float())
