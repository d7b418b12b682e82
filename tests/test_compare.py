"""utils.compare (chapter 07's table of every semantic model): the activation
memory against autograd's saved tensors counted by hand, and one measured row
on a tiny budget."""

import math

import torch
from torch import nn

from utils import compare
from utils.budgets import Budget
from utils.data import shapes
from utils.flops import count_flops


def test_activation_bytes_counts_what_backward_keeps():
    """conv -> ReLU on a [2, 3, 8, 8] input with 4 classes: the convolution
    keeps its input, the ReLU its output, the loss its log-probabilities and
    the targets (and a one-element total weight); the weights are not
    counted."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    y = torch.randint(0, 4, (2, 8, 8))
    expected = (x.nbytes  # conv input
                + 2 * 4 * 8 * 8 * 4  # ReLU output, float32
                + 2 * 4 * 8 * 8 * 4  # log-softmax output
                + y.nbytes)  # targets, int64
    got = compare.activation_bytes(model, x, y)
    assert expected <= got <= expected + 16  # + the loss's scalar weight


def test_activation_bytes_grow_with_the_batch_not_the_weights():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(64, 4, 1))
    y1, y2 = torch.zeros(1, 16, 16, dtype=torch.long), torch.zeros(
        4, 16, 16, dtype=torch.long)
    one = compare.activation_bytes(model, torch.randn(1, 3, 16, 16), y1)
    four = compare.activation_bytes(model, torch.randn(4, 3, 16, 16), y2)
    assert math.isclose(four, 4 * one, rel_tol=0.01)
    assert one < sum(p.nbytes for p in model.parameters()) + 200_000


def test_measure_fills_a_row():
    b = Budget(24, 8, 4, 1, 4, 0.25, 1e-3)
    config = shapes.ShapesConfig(image_size=b.image_size)
    train_set = shapes.Shapes("train", b.train_size, config)
    val_set = shapes.Shapes("val", b.val_size, config)
    row, model = compare.measure("tiny_fcn", b, train_set, val_set, "cpu",
                                 shapes.NUM_CLASSES, log=lambda *a: None)
    assert row["model"] == "TinyFCN" and row["key"] == "tiny_fcn"
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["flops"] == count_flops(model.eval(), torch.zeros(1, 3, 24, 24))
    assert 0 <= row["miou"] <= 1 and 0 <= row["boundary_iou"] <= 1
    assert row["images_per_s"] > 0 and row["activation_mb"] > 0
    assert "| TinyFCN |" in compare.table([row])
