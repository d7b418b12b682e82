"""Receptive fields (chapter 06): the recurrence against the gradient-measured
extent and hand-computed values, dilation as a zero-stuffed kernel, gridding
against brute-force path counting, the effective receptive field of a linear
stack against its closed form, and the context module against Yu & Koltun's
Table 1."""

import itertools
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils import receptive_field as rf
from utils.models.dilation import BASIC_DILATIONS, DILATION10_DILATIONS, ContextModule


def chain(spec, channels=2):
    """nn.Sequential of (kind, kernel, stride, dilation), ReLU after convs."""
    layers = []
    for kind, k, s, d in spec:
        if kind == "conv":
            layers += [nn.Conv2d(channels, channels, k, s, padding=d * (k // 2),
                                 dilation=d), nn.ReLU()]
        elif kind == "max":
            layers.append(nn.MaxPool2d(k, s))
        else:
            layers.append(nn.AvgPool2d(k, s))
    return nn.Sequential(*layers)


CHAINS = {
    "plain 3x3 x6": [("conv", 3, 1, 1)] * 6,
    "dilated 1,2,4,8": [("conv", 3, 1, d) for d in (1, 2, 4, 8)],
    "strided": [("conv", 3, 2, 1), ("conv", 3, 2, 1), ("conv", 3, 1, 1)],
    "vgg-like with pools": [("conv", 3, 1, 1), ("max", 2, 2, 1), ("conv", 3, 1, 1),
                            ("max", 2, 2, 1), ("conv", 3, 1, 2), ("conv", 5, 1, 4)],
    "avg pool and 5x5": [("conv", 5, 1, 1), ("avg", 3, 3, 1), ("conv", 3, 1, 2)],
}


@pytest.mark.parametrize("name", CHAINS)
def test_recurrence_equals_the_gradient_measured_extent(name):
    """The claim of the chapter: the formula gives exactly the extent of the
    non-zero gradient of one output unit (checked on a centre unit far from
    the borders)."""
    torch.manual_seed(0)
    model = chain(CHAINS[name])
    r = rf.receptive_field(rf.layer_geometry(model))
    mask = rf.gradient_extent(model, (2, 3 * r, 3 * r + 5))
    assert rf.extent(mask) == (r, r)
    # and it is solid: none of these chains leaves holes (gridding)
    rows, cols = torch.nonzero(mask.any(1)), torch.nonzero(mask.any(0))
    assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_recurrence_on_hand_computed_cases():
    assert rf.receptive_field([]) == 1
    assert rf.receptive_field([(3, 1, 1)] * 4) == 9  # linear: 2n + 1
    assert rf.receptive_field([(3, 1, 2 ** i) for i in range(4)]) == 31  # 2^(n+1) - 1
    # VGG16: conv5_3 sees 196 pixels, pool5 212, fc6 (7x7 at a 32-pixel jump) 404
    vgg = []
    for depth in (2, 2, 3, 3, 3):
        vgg += [(3, 1, 1)] * depth + [(2, 2, 1)]
    assert rf.receptive_field(vgg[:-1]) == 196
    assert rf.receptive_field(vgg) == 212
    assert rf.receptive_field(vgg + [(7, 1, 1)]) == 404
    # a 7x7 stride-2 convolution then a 3x3 stride-2 pool (ResNet's stem): 7 + 2*2
    assert rf.receptive_field([(7, 2, 1), (3, 2, 1)]) == 11


@pytest.mark.parametrize("bad", [[(3, 1)], [(0, 1, 1)], [(3, 1, 1.5)], [(3, True, 1)],
                                 ["abc"]])
def test_recurrence_rejects_bad_layers(bad):
    with pytest.raises(ValueError, match="layer 0"):
        rf.receptive_field(bad)


def test_growth_is_linear_for_plain_and_exponential_for_dilated_stacks():
    for n in range(1, 9):
        assert rf.receptive_field([(3, 1, 1)] * n) == 2 * n + 1
        dilated = [(3, 1, 2 ** i) for i in range(n)]
        assert rf.receptive_field(dilated) == 2 ** (n + 1) - 1


def test_gradient_extent_through_a_residual_block_and_batch_norm():
    """Branching networks: the extent is that of the longest path."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=2, dilation=2)
            self.bn = nn.BatchNorm2d(4)
            self.b = nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.b(torch.relu(self.bn(self.a(x)))) + x)

    mask = rf.gradient_extent(Block(), (3, 31, 31))
    r = rf.receptive_field([(3, 1, 2), (3, 1, 1)])
    assert rf.extent(mask) == (r, r) == (7, 7)


def test_gradient_extent_leaves_the_model_alone_and_rejects_bad_positions():
    model = chain(CHAINS["strided"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rf.gradient_extent(model, (2, 32, 32), position=(0, 0))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="outside the output"):
        rf.gradient_extent(model, (2, 32, 32), position=(9, 0))


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_dilation_is_a_zero_stuffed_kernel(k, d):
    g = torch.Generator().manual_seed(k * 10 + d)
    w = torch.randn(4, 3, k, k, generator=g)
    x = torch.randn(2, 3, 31, 29, generator=g)
    stuffed = rf.zero_stuffed_kernel(w, d)
    assert stuffed.shape == (4, 3, (k - 1) * d + 1, (k - 1) * d + 1)
    assert torch.count_nonzero(stuffed) == torch.count_nonzero(w)
    for stride, padding in [(1, 0), (2, d), (1, (k // 2) * d)]:
        torch.testing.assert_close(
            F.conv2d(x, stuffed, stride=stride, padding=padding),
            F.conv2d(x, w, stride=stride, padding=padding, dilation=d),
            atol=1e-5, rtol=1e-5)


def brute_force_paths(dilations, k=3):
    """Every choice of one tap per layer, summed: the input offset it reads."""
    taps = [[(i - k // 2) * d for i in range(k)] for d in dilations]
    counts = Counter()
    for ys in itertools.product(*taps):
        for xs in itertools.product(*taps):
            counts[sum(ys), sum(xs)] += 1
    return counts


@pytest.mark.parametrize("dilations", [(1,), (2, 2, 2), (1, 2, 5), (1, 2, 4, 8),
                                       (3, 3), (1, 1, 2)])
def test_tap_counts_equal_brute_force_path_counting(dilations):
    counts = rf.tap_counts(dilations)
    r = rf.receptive_field([(3, 1, d) for d in dilations])
    assert counts.shape == (r, r)
    expected = torch.zeros(r, r, dtype=torch.long)
    for (dy, dx), n in brute_force_paths(dilations).items():
        expected[dy + r // 2, dx + r // 2] = n
    assert torch.equal(counts, expected)


def test_gridding_holes_and_a_hybrid_choice_that_covers_them():
    assert (rf.tap_counts((2, 2, 2)) == 0).float().mean() > 0.7  # 3/4 never read
    assert (rf.tap_counts((1, 2, 5)) > 0).all()  # hybrid dilated convolution
    assert (rf.tap_counts((1, 2, 4, 8)) > 0).all()  # Yu & Koltun: no holes either


def test_effective_receptive_field_of_a_linear_stack_is_its_path_count():
    """With positive averaging weights and no ReLU, every input's gradient is
    the number of paths times a constant: the ERF is tap_counts normalised."""
    stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1, bias=False)
                            for _ in range(5)])
    for conv in stack:
        nn.init.constant_(conv.weight, 1 / 9)
    erf = rf.effective_receptive_field(stack, (1, 31, 31), samples=2)
    expected = torch.zeros(31, 31, dtype=torch.float64)
    expected[10:21, 10:21] = rf.tap_counts((1,) * 5).double()
    torch.testing.assert_close(erf.double(), expected / expected.sum(), atol=1e-7,
                               rtol=1e-5)
    # the mass in a centred square is the square of the 1-D mass (trinomial
    # coefficients of (1 + z + z^2)^5 over 3^5) within its half-side
    one_d = torch.tensor([1., 5, 15, 30, 45, 51, 45, 30, 15, 5, 1]) / 3 ** 5
    for fraction in (0.5, 0.9, 0.95, 1.0):
        side = next(2 * r + 1 for r in range(6)
                    if one_d[5 - r:6 + r].sum() ** 2 >= fraction - 1e-6)
        assert rf.mass_side(erf, fraction) == side
    assert rf.mass_side(erf, 0.95) < 11  # smaller than the theoretical 11


def test_mass_side_on_a_hand_made_map():
    m = torch.zeros(9, 9)
    m[4, 4], m[3, 4], m[4, 7] = 0.5, 0.3, 0.2
    assert rf.mass_side(m, 0.5) == 1
    assert rf.mass_side(m, 0.8) == 3
    assert rf.mass_side(m, 1.0) == 7
    assert rf.mass_side(m, 0.2, centre=(4, 7)) == 1
    assert rf.mass_side(m, 0.5, centre=(4, 7)) == 7  # reaches (4, 4) at radius 3
    with pytest.raises(ValueError, match="fraction"):
        rf.mass_side(m, 0.0)


# Yu & Koltun, Table 1 (basic context module): receptive field after each layer
TABLE_1_RECEPTIVE_FIELDS = (3, 5, 9, 17, 33, 65, 67, 67)


def test_context_module_receptive_field_matches_the_papers_table():
    module = ContextModule(4, BASIC_DILATIONS)
    layers = rf.layer_geometry(module)
    assert len(layers) == len(TABLE_1_RECEPTIVE_FIELDS) == 8
    for n, expected in enumerate(TABLE_1_RECEPTIVE_FIELDS, start=1):
        assert rf.receptive_field(layers[:n]) == expected
    # measured on the module itself (all 8 layers), by back-propagation
    assert rf.extent(rf.gradient_extent(module, (4, 101, 101))) == (67, 67)
    # Dilation10's context module adds dilations 32 and 64
    dilation10 = ContextModule(4, DILATION10_DILATIONS)
    assert rf.receptive_field(rf.layer_geometry(dilation10)) == 259
