"""Training targets: box coding (round trip, hand case, clamp), the matcher on
hand-made IoU matrices, the balanced sampler's counts and random draws."""

import math

import pytest
import torch

from utils.models.detection import BalancedPositiveNegativeSampler, BoxCoder, Matcher


def test_encode_hand_computed():
    """Reference (0, 0, 10, 10) has centre (5, 5), size 10; the target
    (5, 5, 25, 15) has centre (15, 10), size (20, 10)."""
    ref = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[5.0, 5.0, 25.0, 15.0]])
    codes = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt, ref)
    assert torch.allclose(codes, torch.tensor([[1.0, 0.5, math.log(2.0), 0.0]]))
    weighted = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(gt, ref)
    assert torch.allclose(weighted, codes * torch.tensor([10.0, 10.0, 5.0, 5.0]))


def test_decode_inverts_encode():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    refs = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64)
                      * 50], 1)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    gts = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64)
                     * 50], 1)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        coder = BoxCoder(weights)
        codes = coder.encode([gts[:20], gts[20:]], [refs[:20], refs[20:]])
        assert [c.shape for c in codes] == [(20, 4), (30, 4)]
        decoded = coder.decode(torch.cat(codes), [refs[:20], refs[20:]])
        assert decoded.shape == (50, 1, 4)
        assert torch.allclose(decoded[:, 0], gts, rtol=0, atol=1e-9)


def test_decode_clamps_dw_dh_before_exp():
    ref = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    huge = coder.decode_single(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), ref)
    # at most exp(log(1000 / 16)) = 62.5 times the reference's size
    expected = torch.tensor([[2 - 125.0, 1 - 62.5, 2 + 125.0, 1 + 62.5]])
    assert torch.allclose(huge, expected)
    # negative codes are not clamped: boxes may shrink freely
    tiny = coder.decode_single(torch.tensor([[0.0, 0.0, -50.0, -50.0]]), ref)
    assert (tiny[0, 2] - tiny[0, 0]).item() == pytest.approx(4 * math.exp(-50))


def test_decode_several_classes_per_box():
    ref = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    codes = torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0]])  # 2 classes
    boxes = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(codes, [ref])
    assert boxes.tolist() == [[[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]]]


IOU = torch.tensor([[0.90, 0.20, 0.50, 0.10, 0.00],
                    [0.10, 0.65, 0.55, 0.20, 0.25]])  # 2 ground truths x 5 predictions


def test_matcher_thresholds():
    """Best IoU per prediction: 0.9 (gt 0), 0.65 (gt 1), 0.55 (gt 1), 0.2, 0.25."""
    matches = Matcher(0.7, 0.3)(IOU.clone())
    between, below = Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD
    assert matches.tolist() == [0, between, between, below, below]
    assert (Matcher.BELOW_LOW_THRESHOLD, Matcher.BETWEEN_THRESHOLDS) == (-1, -2)
    # equal thresholds: no "between"; high is inclusive, low is exclusive
    assert Matcher(0.55, 0.55)(IOU.clone()).tolist() == [0, 1, 1, -1, -1]


def test_matcher_low_quality_matches():
    """Ground truth 1's best prediction is 1 (0.65 < 0.7): it is matched anyway."""
    assert Matcher(0.7, 0.3, True)(IOU.clone()).tolist() == [0, 1, -2, -1, -1]


def test_low_quality_matches_include_ties_and_use_the_prediction_s_best():
    iou = torch.tensor([[0.40, 0.40, 0.10],
                        [0.30, 0.35, 0.35]])
    # gt 0's maximum 0.4 is reached by predictions 0 and 1 (a tie): both restored;
    # gt 1's maximum 0.35 by predictions 1 and 2. Prediction 1's own best is gt 0
    # (0.4), and that is what it gets.
    assert Matcher(0.7, 0.3, True)(iou.clone()).tolist() == [0, 0, 1]
    assert Matcher(0.7, 0.3, False)(iou.clone()).tolist() == [-2, -2, -2]


def test_matcher_errors():
    with pytest.raises(ValueError, match="No ground-truth boxes"):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="No proposal boxes"):
        Matcher(0.7, 0.3)(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


def labels(n_pos, n_neg, n_ignore, g):
    values = torch.cat([torch.randint(1, 5, (n_pos,), generator=g),
                        torch.zeros(n_neg, dtype=torch.int64),
                        torch.full((n_ignore,), -1)])
    return values[torch.randperm(len(values), generator=g)]


@pytest.mark.parametrize("n_pos,n_neg,expected", [
    (10, 1000, (10, 246)),   # few positives: negatives fill the batch
    (300, 1000, (128, 128)),  # positives capped at half
    (300, 20, (128, 20)),     # few negatives: the batch is not filled
    (0, 0, (0, 0)),
])
def test_sampler_counts(n_pos, n_neg, expected):
    g = torch.Generator().manual_seed(n_pos + n_neg)
    values = labels(n_pos, n_neg, 50, g)
    pos, neg = BalancedPositiveNegativeSampler(256, 0.5)([values])
    assert (int(pos[0].sum()), int(neg[0].sum())) == expected
    assert pos[0].dtype == torch.uint8 and pos[0].shape == values.shape
    assert (values[pos[0].bool()] >= 1).all() and (values[neg[0].bool()] == 0).all()


def test_sampler_draws_as_torch_randperm_per_image():
    """Same seed, same draws: one randperm over the positives, then one over the
    negatives, per image (what makes it reproduce torchvision's choice)."""
    g = torch.Generator().manual_seed(5)
    images = [labels(40, 500, 30, g), labels(5, 300, 0, g)]
    torch.manual_seed(123)
    pos, neg = BalancedPositiveNegativeSampler(64, 0.25)(images)
    torch.manual_seed(123)
    for values, p, n in zip(images, pos, neg):
        positive = torch.where(values >= 1)[0]
        negative = torch.where(values == 0)[0]
        num_pos = min(len(positive), 16)
        chosen_pos = positive[torch.randperm(len(positive))[:num_pos]]
        chosen_neg = negative[torch.randperm(len(negative))[:64 - num_pos]]
        assert torch.equal(torch.where(p.bool())[0], chosen_pos.sort().values)
        assert torch.equal(torch.where(n.bool())[0], chosen_neg.sort().values)
