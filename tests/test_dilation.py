"""Dilation10 and the context module (chapter 06): identity initialisation
against the paper's formula written as loops, the fresh module passing its
input on, the paper's parameter count, the front end's stride and output
shapes on odd sizes, and ImageNet VGG16 weights through load_torchvision."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from torchvision_format import vgg_state_dict

from utils.models import MODELS, load_torchvision
from utils.models.dilation import (
    BASIC_DILATIONS,
    DILATION10_DILATIONS,
    LARGE_MULTIPLIERS,
    ContextModule,
    Dilation10,
    identity_init_,
)


def paper_identity(c_out, c_in, k, C):
    """Yu & Koltun, Sec. 3: k^b(t, a) = C / c_out if t = 0 and
    floor(a C / c_in) = floor(b C / c_out), else 0 (no noise)."""
    w = torch.zeros(c_out, c_in, k, k)
    for b in range(c_out):
        for a in range(c_in):
            if (a * C) // c_in == (b * C) // c_out:
                w[b, a, k // 2, k // 2] = C / c_out
    return w


@pytest.mark.parametrize("c_in, c_out, k, C", [(4, 4, 3, 4), (4, 8, 3, 4),
                                               (8, 16, 3, 4), (128, 4, 1, 4),
                                               (6, 6, 5, 3), (3, 12, 3, 3)])
def test_identity_init_is_the_papers_formula(c_in, c_out, k, C):
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    assert identity_init_(conv, C) is conv
    torch.testing.assert_close(conv.weight.data, paper_identity(c_out, c_in, k, C))
    assert not conv.bias.any()


def test_identity_init_noise_and_errors():
    conv = nn.Conv2d(4, 8, 3)
    identity_init_(conv, 4, noise_std=1e-3, generator=torch.Generator().manual_seed(0))
    off = conv.weight.data - paper_identity(8, 4, 3, 4)
    assert 0 < off.abs().max() < 0.01
    with pytest.raises(ValueError, match="odd kernel"):
        identity_init_(nn.Conv2d(2, 2, 2))
    with pytest.raises(ValueError, match="multiples"):
        identity_init_(nn.Conv2d(4, 6, 3), 4)


@pytest.mark.parametrize("multipliers", [None, LARGE_MULTIPLIERS])
def test_fresh_context_module_passes_its_input_on(multipliers):
    C = 5
    module = ContextModule(C, BASIC_DILATIONS, multipliers)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, C, 21, 34, generator=g)  # non-negative scores
    with torch.no_grad():
        torch.testing.assert_close(module(x), x, atol=1e-5, rtol=1e-5)
        z = torch.randn(2, C, 21, 34, generator=g)  # the first ReLU truncates
        torch.testing.assert_close(module(z), z.clamp(min=0), atol=1e-5, rtol=1e-5)


def test_context_module_sizes_match_the_paper():
    C = 21
    basic = ContextModule(C)
    weights = sum(m.weight.numel() for m in basic.modules() if isinstance(m, nn.Conv2d))
    assert weights == 64 * C * C  # 7 layers of 3x3 C -> C, one 1x1
    large = ContextModule(C, BASIC_DILATIONS, LARGE_MULTIPLIERS)
    channels = [m.out_channels for m in large.modules() if isinstance(m, nn.Conv2d)]
    assert channels == [2 * C, 2 * C, 4 * C, 8 * C, 16 * C, 32 * C, 32 * C, C]
    dilations = [m.dilation[0] for m in large.modules() if isinstance(m, nn.Conv2d)]
    assert dilations == [1, 1, 2, 4, 8, 16, 1, 1]
    with pytest.raises(ValueError, match="channels"):
        basic(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("context", [True, False])
@pytest.mark.parametrize("size", [(45, 71), (9, 17), (1, 1)])
def test_dilation10_output_shapes_on_odd_sizes(context, size):
    model = Dilation10(5, width=0.0625, context=context).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
        fc7 = model.front_end(torch.zeros(1, 3, *size))["fc7"]
    assert out.shape == (2, 5, *size)
    assert fc7.shape[-2:] == tuple(-(-s // 8) for s in size)  # stride 8


def test_dilation10_layout_and_registry():
    model = MODELS["dilation10"](8, width=0.0625)
    assert isinstance(model, Dilation10)
    assert model.context.dilations == DILATION10_DILATIONS
    assert model.front_end.output_stride == 8
    assert not model.upsample.weight.requires_grad  # fixed bilinear 8x
    with pytest.raises(ValueError, match="image batch"):
        model(torch.zeros(1, 4, 16, 16))


def test_front_end_starts_as_the_fresh_model_plus_truncation():
    """The identity-initialised context module changes nothing where the front
    end's scores are non-negative: the two models agree after truncation."""
    torch.manual_seed(0)
    with_context = Dilation10(4, width=0.0625).eval()
    front = Dilation10(4, width=0.0625, context=False).eval()
    front.load_state_dict(with_context.state_dict(), strict=False)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        scores = front.final(front.front_end((x - front.mean) / front.std)["fc7"])
        expected = front.upsample(scores.clamp(min=0))[..., :40, :40]
        torch.testing.assert_close(with_context(x), expected, atol=1e-5, rtol=1e-4)


def test_dilation10_loads_vgg16_weights_into_the_front_end():
    """torchvision's vgg16 layout (slim, to keep the test fast; the backbone's
    tests load full width): every tensor lands in the front end, fc6 reshaped
    into a 7x7 convolution; ``final`` and the context module are untouched."""
    w = 0.0625
    sd = vgg_state_dict(width=w, seed=3)
    model = Dilation10(21, width=w)
    before = {k: v.clone() for k, v in model.state_dict().items()
              if not k.startswith("front_end.")}
    load_torchvision(model, sd)
    torch.testing.assert_close(model.front_end.conv5.conv5_3.weight.data,
                               sd["features.28.weight"])
    fc = model.front_end.fc_channels
    torch.testing.assert_close(model.front_end.fc6.weight.data,
                               sd["classifier.0.weight"].view(fc, -1, 7, 7))
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ValueError, match="width"):
        load_torchvision(Dilation10(21, width=2 * w), sd)
