"""ConfusionMatrix and the metrics read off it, against brute-force loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from utils.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    metrics_from_matrix,
    per_image_confusion,
)

C, IGNORE = 6, 255


def random_batch(seed, shape=(3, 9, 11), ignored=0.2):
    """Target uses classes 0-3 and ignore, prediction 0, 1, 2 and 4: class 3 is
    never predicted, 4 is predicted but absent, 5 is absent from both."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignored] = IGNORE
    pred = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, shape, generator=g)]
    return pred, target


def brute_force(pairs, num_classes, ignore):
    """Every metric from per-pixel loops, following the textbook definitions."""
    m = [[0] * num_classes for _ in range(num_classes)]
    for pred, target in pairs:
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
            if t != ignore:
                m[t][p] += 1
    rows = [sum(r) for r in m]
    cols = [sum(m[i][j] for i in range(num_classes)) for j in range(num_classes)]
    total = sum(rows)
    iou, dice, acc = [], [], []
    for c in range(num_classes):
        tp, fp, fn = m[c][c], cols[c] - m[c][c], rows[c] - m[c][c]
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
        acc.append(tp / rows[c] if rows[c] else math.nan)

    def mean(xs):
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs)

    return {
        "matrix": m,
        "pixel_accuracy": sum(m[c][c] for c in range(num_classes)) / total,
        "mean_pixel_accuracy": mean(acc),
        "class_accuracy": acc,
        "iou": iou,
        "mean_iou": mean(iou),
        "fw_iou": sum(rows[c] / total * iou[c] for c in range(num_classes) if rows[c]),
        "dice": dice,
        "mean_dice": mean(dice),
    }


def assert_same(got, expected):
    for key in ("pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "fw_iou",
                "mean_dice"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    for key in ("iou", "dice", "class_accuracy"):
        exp = torch.tensor(expected[key], dtype=torch.float64)
        assert torch.allclose(got[key], exp, atol=1e-12, equal_nan=True), key


@pytest.mark.parametrize("seed", range(6))
def test_every_metric_matches_brute_force_over_batches(seed):
    # Odd seeds have no ignored pixel at all: the largest target label is then 3.
    batches = [random_batch(seed * 10 + i, ignored=0.2 * (seed % 2 == 0))
               for i in range(3)]
    cm = ConfusionMatrix(C, ignore_index=IGNORE)
    for pred, target in batches:
        cm.update(pred, target)
    expected = brute_force(batches, C, IGNORE)
    assert cm.matrix.tolist() == expected["matrix"]
    got = cm.compute()
    assert_same(got, expected)
    # The corner cases are really there: never predicted, only predicted, absent.
    assert got["iou"][3] == 0 and got["iou"][4] == 0 and math.isnan(got["iou"][5])
    assert math.isnan(got["class_accuracy"][4])


def test_logits_uint8_and_slow_path_agree_with_labels():
    pred, target = random_batch(7)
    expected = confusion_matrix(pred, target, C)
    logits = F.one_hot(pred, C).permute(0, 3, 1, 2).float() + 0.1 * torch.rand(
        pred.shape[0], C, *pred.shape[1:])
    assert torch.equal(confusion_matrix(logits, target, C), expected)
    assert torch.equal(confusion_matrix(pred.byte(), target.byte(), C), expected)
    # A negative ignore index takes the masked path; the counts are the same.
    neg = torch.where(target == IGNORE, -1, target)
    assert torch.equal(confusion_matrix(pred, neg, C, ignore_index=-1), expected)
    # Whatever is predicted at ignored pixels does not count, even out of range.
    wild = torch.where(target == IGNORE, 1000, pred)
    assert torch.equal(confusion_matrix(wild, target, C), expected)


def test_high_classes_absent_from_target_and_no_ignored_pixel():
    # The fast path's histogram must still cover every class.
    pred, target = torch.tensor([[0, 5], [1, 1]]), torch.tensor([[0, 1], [1, 0]])
    expected = torch.zeros(C, C, dtype=torch.int64)
    expected[0, 0] = expected[1, 5] = expected[1, 1] = expected[0, 1] = 1
    assert torch.equal(confusion_matrix(pred, target, C), expected)
    cm = ConfusionMatrix(C)
    cm.update(pred, target)
    cm.update(pred[:1], target[:1])  # a smaller batch reuses the scratch buffer
    assert torch.equal(cm.matrix, expected + confusion_matrix(pred[:1], target[:1], C))


def test_ignore_none_counts_every_pixel():
    pred, target = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])
    assert confusion_matrix(pred, target, 2, ignore_index=None).tolist() == [[1, 1],
                                                                            [0, 1]]


def test_per_image_confusion_and_batched_metrics():
    pred, target = random_batch(3)
    per = per_image_confusion(pred, target, C)
    for b in range(len(pred)):
        assert torch.equal(per[b], confusion_matrix(pred[b], target[b], C))
    assert torch.equal(per.sum(0), confusion_matrix(pred, target, C))
    batched = metrics_from_matrix(per)
    for b in range(len(pred)):
        single = metrics_from_matrix(per[b])
        for k, v in single.items():
            assert torch.allclose(batched[k][b], v, equal_nan=True), k


def test_dataset_level_iou_is_union_weighted_mean_of_per_image_iou():
    pred, target = random_batch(11)
    per = per_image_confusion(pred, target, C).double()
    tp = per.diagonal(dim1=-2, dim2=-1)
    union = per.sum(-1) + per.sum(-2) - tp
    iou_images = metrics_from_matrix(per)["iou"].nan_to_num(0)
    weighted = (iou_images * union).sum(0) / union.sum(0)
    dataset = metrics_from_matrix(per.sum(0))["iou"]
    assert torch.allclose(weighted, dataset, equal_nan=True)


def test_empty_matrix_gives_nan_and_updates_accumulate_until_reset():
    cm = ConfusionMatrix(3)
    out = cm.compute()
    assert math.isnan(out["pixel_accuracy"]) and math.isnan(out["mean_iou"])
    assert math.isnan(out["fw_iou"])
    (p1, t1), (p2, t2) = random_batch(1), random_batch(2)
    a = ConfusionMatrix(C)
    a.update(p1, t1)
    a.update(p2, t2)
    both = confusion_matrix(torch.cat([p1.flatten(), p2.flatten()]),
                            torch.cat([t1.flatten(), t2.flatten()]), C)
    assert torch.equal(a.matrix, both)
    a.reset()
    assert a.matrix.sum() == 0


def test_all_reduce_single_process_group(tmp_path):
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    cm = ConfusionMatrix(C)
    cm.update(*random_batch(4))
    before = cm.matrix.clone()
    assert torch.equal(cm.all_reduce().matrix, before)  # no group: a no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:
        assert torch.equal(cm.all_reduce().matrix, before)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long),
         r"\[2, 3\] and target \[2, 4\]"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), "integer dtype"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), "integer labels"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 3, dtype=torch.long),
         r"\[B, 4, \.\.\.\]"),
        (torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long),
         "bool"),
        (torch.zeros(4, dtype=torch.long), torch.tensor([0, 7, 255, 9]),
         r"target has labels \[7, 9\]"),
        (torch.zeros(4, dtype=torch.long), torch.tensor([0, -3, 1, 2]),
         r"target has labels \[-3\]"),
        (torch.tensor([0, 4, 1, 6]), torch.tensor([0, 1, 1, 2]),
         r"pred has labels \[4, 6\]"),
    ],
)
def test_bad_input_names_the_offending_values(pred, target, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix(4).update(pred, target)


def test_bad_construction():
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(4, ignore_index=2)
    with pytest.raises(ValueError, match="positive int"):
        ConfusionMatrix(0)
