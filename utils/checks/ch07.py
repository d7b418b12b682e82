"""Checks for chapter 07 (DeepLabV3+, ASPP and the decoder).

Each compares the learner's code with the course's own in
:mod:`utils.models.deeplab` on fixed inputs, with the same weights, and
refuses that code as an answer (see :mod:`utils.checks.common`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.checks.common import assert_close, exercise, fail, learner, ok
from utils.models import deeplab


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and batch-norm statistics, eval mode: every branch and
    every channel counts, and the two copies compute the same function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _same_weights(mine: nn.Module, ref: nn.Module, name: str) -> None:
    if not isinstance(mine, nn.Module):
        fail(f"{name}: expected an nn.Module, got {type(mine).__name__}")
    try:
        mine.load_state_dict(ref.state_dict())
    except RuntimeError as err:
        fail(f"{name}: its layers differ from the ones given",
             "the layers of __init__ as given", str(err).splitlines()[0],
             hint="write forward only; keep __init__ as it is")
    mine.eval()


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@exercise(
    forbid=[deeplab.SeparableConv2d],
    hints=[
        "two convolutions: the first filters every channel on its own in "
        "space, the second mixes the channels at each pixel",
        "a convolution with as many groups as input channels filters each "
        "channel separately; it carries the kernel size, the dilation and the "
        "padding, and the 1x1 convolution after it changes the channel count",
    ],
)
def check_separable_conv(SeparableConv2d) -> None:
    """``SeparableConv2d(c_in, c_out, k, dilation)`` is the atrous separable
    convolution: the canonical one's weights give its outputs."""
    g = torch.Generator().manual_seed(3)
    for cin, cout, k, d, size in [(4, 6, 3, 1, (9, 11)), (6, 3, 3, 2, (13, 8)),
                                  (3, 5, 5, 3, (17, 19)), (8, 8, 3, 4, (7, 7))]:
        name = f"SeparableConv2d({cin}, {cout}, {k}, {d})"
        mine = learner(SeparableConv2d, cin, cout, k, d, what=name)
        ref = _randomise(deeplab.SeparableConv2d(cin, cout, k, d), 4)
        if not isinstance(mine, nn.Module):
            fail(f"{name}: expected an nn.Module, got {type(mine).__name__}")
        want = k * k * cin + cin * cout
        got = _params(mine)
        if got != want:
            hint = None
            if got in (k * k * cin * cin + cin * cout, k * k * cin * cout + cin * cout,
                       k * k * cin * cout):
                hint = "the first convolution mixes the channels: it must " \
                       "filter each channel on its own"
            elif got == want + cin + cout or got == want + cout:
                hint = "no biases: batch norm follows in the network"
            fail(f"{name}: wrong number of parameters (k^2 c_in + c_in c_out)",
                 want, got, hint=hint)
        _same_weights(mine, ref, name)
        x = torch.randn(2, cin, *size, generator=g)
        with torch.no_grad():
            out = learner(mine, x, what=f"{name} on {list(x.shape)}")
            expected = ref(x)
        hint = None
        if isinstance(out, torch.Tensor) and out.shape != expected.shape:
            hint = "the output keeps the input's height and width: pad by " \
                   "half the dilated kernel's span"
        elif d > 1 and isinstance(out, torch.Tensor) and out.shape == expected.shape:
            plain = ref.pointwise(F.conv2d(x, ref.depthwise.weight, padding=k // 2,
                                           groups=cin))
            if torch.allclose(out, plain, atol=1e-5):
                hint = "the depthwise convolution is the atrous one: dilate it"
        assert_close(out, expected, f"{name} on {list(x.shape)}", hint=hint,
                     atol=1e-5, rtol=1e-4)
    ok("SeparableConv2d has k^2 c_in + c_in c_out weights and the canonical "
       "outputs, dilated or not")


def _shape_diagnosis(err: Exception) -> str | None:
    text = str(err)
    if "Sizes of tensors must match" in text or "size of tensor" in text:
        return "every branch must have the map's height and width before " \
               "concatenating: spread the pooled 1x1 branch back over the map"
    return None


@exercise(
    forbid=[deeplab.ASPP],
    hints=[
        "run the five branches on the same input and join them along the "
        "channels; then project the join back and apply dropout",
        "the image-pooling branch gives one vector per image: after its 1x1 "
        "convolution, bring it back to the map's height and width (bilinear "
        "interpolation from one value repeats it) before joining",
    ],
)
def check_aspp(ASPP) -> None:
    """``ASPP(c_in, rates, c_out).forward`` gives the canonical ASPP's outputs
    with the same weights (eval mode)."""
    g = torch.Generator().manual_seed(8)
    for rates, size in [((1, 2, 3), (5, 7)), ((6, 12, 18), (4, 4)),
                        ((2, 4), (9, 6))]:
        name = f"ASPP(16, {rates}, 8)"
        mine = learner(ASPP, 16, rates, 8, what=name)
        ref = _randomise(deeplab.ASPP(16, rates, 8), 9)
        _same_weights(mine, ref, name)
        x = torch.randn(2, 16, *size, generator=g)
        with torch.no_grad():
            out = learner(mine, x, what=f"{name} on {list(x.shape)}",
                          diagnose=_shape_diagnosis)
            expected = ref(x)
        hint = None
        if isinstance(out, torch.Tensor) and out.shape[1] == (2 + len(rates)) * 8:
            hint = "the concatenation is projected back to c_out channels"
        assert_close(out, expected, f"{name} on {list(x.shape)}", hint=hint,
                     atol=1e-4, rtol=1e-4)
    ok("ASPP gives the canonical outputs for 2 and 3 rates, on maps smaller "
       "and larger than its rates")


def _decoder_diagnosis(err: Exception) -> str | None:
    text = str(err)
    if "Sizes of tensors must match" in text or "size of tensor" in text:
        return "the low-level map is not always exactly 4x the ASPP map (odd " \
               "image sizes): upsample to the low-level map's own size"
    return None


@exercise(
    forbid=[deeplab.Decoder],
    hints=[
        "three steps: project the low-level features, bring the ASPP features "
        "to the low-level resolution, join the two and convolve",
        "upsample bilinearly (corners not aligned) to the low-level map's own "
        "height and width, and put the ASPP features first in the join",
    ],
)
def check_decoder(Decoder) -> None:
    """``Decoder(c_low, c, c_proj).forward(x, low_level)`` gives the canonical
    decoder's outputs with the same weights (eval mode)."""
    g = torch.Generator().manual_seed(10)
    name = "Decoder(12, 8, 4)"
    mine = learner(Decoder, 12, 8, 4, what=name)
    ref = _randomise(deeplab.Decoder(12, 8, 4), 11)
    _same_weights(mine, ref, name)
    # a 64x80 image at stride 16, and a 50x61 one (the low level is 13x16,
    # not 4 x 4 = 16 by 4 x 4 = 16)
    for x_size, low_size in [((4, 5), (16, 20)), ((4, 4), (13, 16))]:
        x = torch.randn(2, 8, *x_size, generator=g)
        low = torch.randn(2, 12, *low_size, generator=g)
        what = f"{name} on ASPP features {list(x.shape)}, low level {list(low.shape)}"
        with torch.no_grad():
            out = learner(mine, x, low, what=what, diagnose=_decoder_diagnosis)
            expected = ref(x, low)
            hint = None
            if isinstance(out, torch.Tensor) and out.shape == expected.shape:
                proj = ref.low_level_proj(low)
                for corners in (False, True):
                    up = F.interpolate(x, size=low_size, mode="bilinear",
                                       align_corners=corners)
                    if torch.allclose(out, ref.fuse(torch.cat([proj, up], 1)),
                                      atol=1e-4):
                        hint = "the ASPP features come first in the join, then " \
                               "the projected low-level ones"
                    elif corners and torch.allclose(
                            out, ref.fuse(torch.cat([up, proj], 1)), atol=1e-4):
                        hint = "interpolate without aligning the corners, as " \
                               "everywhere else in the course"
        assert_close(out, expected, what, hint=hint, atol=1e-4, rtol=1e-4)
    ok("Decoder fuses as the canonical one, also where the low-level map is not "
       "exactly 4x the ASPP map")
