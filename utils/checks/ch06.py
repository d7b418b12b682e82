"""Checks for chapter 06 (dilated convolution and receptive fields).

Each compares the learner's code with the course's own in
:mod:`utils.receptive_field` and :mod:`utils.models.dilation` on fixed inputs
and refuses that code as an answer (see :mod:`utils.checks.common`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils import receptive_field as rf
from utils.checks.common import assert_close, exercise, fail, learner, ok
from utils.models import dilation

# Chains of (kernel, stride, dilation): plain, strided, dilated, pooled, mixed.
_CHAINS = [
    [],
    [(3, 1, 1)],
    [(3, 1, 1)] * 4,
    [(3, 1, d) for d in (1, 2, 4, 8)],
    [(7, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1)],
    [(3, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 1), (2, 2, 1), (3, 1, 2), (7, 1, 4)],
    [(5, 3, 1), (3, 1, 2), (1, 1, 1), (3, 2, 3), (3, 1, 1)],
]


def _no_jump(layers):  # forgets that strides spread later taps apart
    return 1 + sum((k - 1) * d for k, s, d in layers)


def _jump_first(layers):  # multiplies the jump in before the layer's own taps
    size, jump = 1, 1
    for k, s, d in layers:
        jump *= s
        size += (k - 1) * d * jump
    return size


def _no_dilation(layers):
    size, jump = 1, 1
    for k, s, _ in layers:
        size += (k - 1) * jump
        jump *= s
    return size


@exercise(
    forbid=[rf.receptive_field, rf._geometry],
    hints=[
        "walk through the layers keeping two numbers: the receptive field so "
        "far, and how many input pixels apart two neighbouring units of the "
        "current layer are",
        "a layer's k taps are d units apart, so it widens the field by (k - 1) "
        "d units of the current spacing; only afterwards does its stride "
        "multiply the spacing",
    ],
)
def check_receptive_field(receptive_field) -> None:
    """``receptive_field(layers)`` is the side of the receptive field of a
    chain of ``(kernel, stride, dilation)`` layers."""
    for layers in _CHAINS:
        what = f"receptive_field({layers})"
        got = learner(receptive_field, list(layers), what=what)
        expected = rf.receptive_field(layers)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, int):
            fail(f"{what}: expected an int", expected, got,
                 hint="return the side as a Python int")
        if got != expected:
            hint = None
            if got == _no_jump(layers):
                hint = "a stride spreads the next layers' taps apart: keep the " \
                       "spacing of the current units and multiply it in"
            elif got == _jump_first(layers):
                hint = "a layer's stride affects only the layers after it"
            elif got == _no_dilation(layers):
                hint = "dilation d puts the taps d units apart"
            fail(f"{what} is wrong", expected, got, hint=hint)
    ok(f"receptive_field is right on {len(_CHAINS)} chains (strides, dilations, "
       "pools)")


@exercise(
    forbid=[rf.zero_stuffed_kernel],
    hints=[
        "the dilated kernel's taps land d pixels apart: between two of them "
        "there are d - 1 zeros, and none outside the outer taps",
        "a k-tap kernel dilated by d spans (k - 1) d + 1 pixels; make a zero "
        "tensor of that size and write the weights into every d-th row and "
        "column (slicing with a step does it)",
    ],
)
def check_zero_stuffed_kernel(zero_stuffed_kernel) -> None:
    """``zero_stuffed_kernel(w, d)`` is the ordinary kernel equal to ``w``
    dilated by ``d``: same result under ``F.conv2d`` without dilation."""
    g = torch.Generator().manual_seed(6)
    cases = [((1, 1, 3, 3), 1), ((1, 1, 3, 3), 2), ((4, 2, 3, 3), 3),
             ((2, 3, 5, 5), 2), ((3, 2, 1, 1), 4), ((2, 2, 2, 2), 3)]
    for shape, d in cases:
        w = torch.randn(shape, generator=g)
        what = f"zero_stuffed_kernel(w of shape {list(shape)}, {d})"
        got = learner(zero_stuffed_kernel, w.clone(), d, what=what)
        expected = rf.zero_stuffed_kernel(w, d)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape[-1] == shape[-1] * d:
            hint = "the kernel ends at its last tap: (k - 1) d + 1, not k d"
        assert_close(got, expected, what, hint=hint)
        x = torch.randn(1, shape[1], 17, 19, generator=g)
        assert_close(F.conv2d(x, got), F.conv2d(x, w, dilation=d),
                     f"conv2d with {what} vs conv2d(w, dilation={d})", atol=1e-5)
    ok("zero_stuffed_kernel gives conv2d(w, dilation=d) as an ordinary kernel, "
       "for 6 kernels and d = 1..4")


@exercise(
    forbid=[dilation.identity_init_],
    hints=[
        "only the centre tap of the kernel may be non-zero, and the bias is "
        "zero: a 1x1 map from input channels to output channels",
        "map channel a of c_in and channel b of c_out to the same one of C "
        "groups (a C / c_in and b C / c_out, rounded down) and join them with "
        "weight C / c_out, so that a layer that spreads C channels over m C "
        "divides by m and the one that gathers them back sums",
    ],
)
def check_identity_init(identity_init_) -> None:
    """``identity_init_(conv, channels)`` sets ``conv``'s weight and bias as
    Yu & Koltun's identity initialisation (in place)."""
    C = 3
    cases = [(C, C, 3, 1), (C, C, 3, 4), (C, 2 * C, 3, 1), (2 * C, 4 * C, 3, 2),
             (4 * C, 4 * C, 3, 1), (32 * C, C, 1, 1), (5, 5, 1, 1)]
    for cin, cout, k, d in cases:
        C_case = 5 if cin == 5 else C
        mine = nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d)
        ref = nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d)
        what = f"identity_init_(Conv2d({cin}, {cout}, {k}), {C_case})"
        learner(identity_init_, mine, C_case, what=what)
        dilation.identity_init_(ref, C_case)
        hint = None
        if cin != cout and torch.count_nonzero(mine.weight) == min(cin, cout):
            hint = "with more outputs than inputs (or fewer), every channel " \
                   "joins a block of channels, not one"
        elif torch.allclose((mine.weight != 0).float(), (ref.weight != 0).float()):
            hint = "the right taps, the wrong value: it is C / c_out, so that " \
                   "spreading and gathering back gives the input again"
        with torch.no_grad():
            assert_close(mine.weight, ref.weight, f"{what}: weight", hint=hint)
            assert_close(mine.bias, ref.bias, f"{what}: bias",
                         hint="the bias must start at zero too")
    # The whole point: a chain of identity-initialised layers passes x >= 0 on.
    chain = [nn.Conv2d(C, 2 * C, 3, padding=1), nn.Conv2d(2 * C, 4 * C, 3, padding=2,
                                                         dilation=2),
             nn.Conv2d(4 * C, C, 1)]
    for conv in chain:
        learner(identity_init_, conv, C, what=f"identity_init_({conv}, {C})")
    x = torch.rand(2, C, 11, 13, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = chain[2](torch.relu(chain[1](torch.relu(chain[0](x)))))
    assert_close(y, x, "3 -> 6 -> 12 -> 3 channels, identity-initialised, on x >= 0",
                 atol=1e-5)
    ok("identity_init_ matches the paper's formula for 7 layers and passes "
       "x >= 0 through a 3 -> 6 -> 12 -> 3 chain")
