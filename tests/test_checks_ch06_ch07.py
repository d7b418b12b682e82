"""The checks under chapters 06 and 07's exercises: each passes an independent
correct answer (written here, not the canonical code), refuses the canonical
code, and refuses plausible wrong answers with a message that says why."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils import receptive_field as rf
from utils.checks import ch06, ch07
from utils.checks.common import CheckFailed
from utils.models import deeplab, dilation

# ------------------------------------------------------ independent answers


def my_receptive_field(layers):
    """Backwards: the field of one unit, grown layer by layer from the top."""
    size = 1
    for k, s, d in reversed(list(layers)):
        size = (size - 1) * s + (k - 1) * d + 1
    return size


def my_zero_stuffed_kernel(w, d):
    k = w.shape[-1]
    out = torch.zeros(*w.shape[:-2], (k - 1) * d + 1, (k - 1) * d + 1)
    for a in range(k):
        for b in range(w.shape[-2]):
            out[..., b * d, a * d] = w[..., b, a]
    return out


def my_identity_init(conv, C):
    c_out, c_in, kh, kw = conv.weight.shape
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for b in range(c_out):
            for a in range(c_in):
                if int(a * C / c_in) == int(b * C / c_out):
                    conv.weight[b, a, kh // 2, kw // 2] = C / c_out


class MySeparable(nn.Module):
    def __init__(self, cin, cout, k=3, dilation=1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, k, padding="same", dilation=dilation,
                                   groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def aspp_layers(module, in_channels, rates, out_channels):
    """The layers the chapter's ASPP.__init__ gives."""
    nn.Module.__init__(module)
    module.conv1x1 = deeplab.ConvBNReLU(in_channels, out_channels, 1)
    module.atrous = nn.ModuleList(deeplab.ConvBNReLU(in_channels, out_channels, 3, r)
                                  for r in rates)
    module.pool = nn.AdaptiveAvgPool2d(1)
    module.image_pooling = deeplab.ConvBNReLU(in_channels, out_channels, 1)
    module.project = deeplab.ConvBNReLU((2 + len(rates)) * out_channels,
                                        out_channels, 1)
    module.dropout = nn.Dropout(0.5)


class MyASPP(nn.Module):
    def __init__(self, in_channels, rates=(6, 12, 18), out_channels=256):
        aspp_layers(self, in_channels, rates, out_channels)

    def forward(self, x):
        h, w = x.shape[-2:]
        pooled = self.image_pooling(x.mean((2, 3), keepdim=True))
        parts = [self.conv1x1(x), *[c(x) for c in self.atrous],
                 pooled.expand(-1, -1, h, w)]
        return self.dropout(self.project(torch.cat(parts, 1)))


def decoder_layers(module, low_level_channels, channels=256, low_channels=48):
    nn.Module.__init__(module)
    module.low_level_proj = deeplab.ConvBNReLU(low_level_channels, low_channels, 1)
    module.fuse = nn.Sequential(
        deeplab.ConvBNReLU(channels + low_channels, channels, 3),
        deeplab.ConvBNReLU(channels, channels, 3))


class MyDecoder(nn.Module):
    def __init__(self, low_level_channels, channels=256, low_channels=48):
        decoder_layers(self, low_level_channels, channels, low_channels)

    def forward(self, x, low_level):
        up = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear")
        return self.fuse(torch.cat([up, self.low_level_proj(low_level)], 1))


def test_independent_answers_pass(capsys):
    ch06.check_receptive_field(my_receptive_field)
    ch06.check_zero_stuffed_kernel(my_zero_stuffed_kernel)
    ch06.check_identity_init(my_identity_init)
    ch07.check_separable_conv(MySeparable)
    ch07.check_aspp(MyASPP)
    ch07.check_decoder(MyDecoder)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("✓ ") for line in lines)


# ----------------------------------------------------- the reference refused


def test_the_canonical_code_is_refused():
    cases = [
        (ch06.check_receptive_field, rf.receptive_field),
        (ch06.check_receptive_field, lambda layers: rf.receptive_field(layers)),
        (ch06.check_zero_stuffed_kernel, rf.zero_stuffed_kernel),
        (ch06.check_identity_init, dilation.identity_init_),
        (ch07.check_separable_conv, deeplab.SeparableConv2d),
        (ch07.check_aspp, deeplab.ASPP),
        (ch07.check_decoder, deeplab.Decoder),
    ]
    for check, answer in cases:
        with pytest.raises(CheckFailed, match="your code calls utils"):
            check(answer)

    class Wrapped(deeplab.ASPP):  # a thin subclass is the reference too
        pass

    with pytest.raises(CheckFailed, match="your code calls utils"):
        ch07.check_aspp(Wrapped)


# -------------------------------------------------------- wrong answers


def test_receptive_field_mistakes_are_diagnosed():
    def no_jump(layers):
        return 1 + sum((k - 1) * d for k, s, d in layers)

    with pytest.raises(CheckFailed, match="stride spreads"):
        ch06.check_receptive_field(no_jump)

    def no_dilation(layers):
        size, jump = 1, 1
        for k, s, _ in layers:
            size, jump = size + (k - 1) * jump, jump * s
        return size

    with pytest.raises(CheckFailed, match="dilation d puts the taps"):
        ch06.check_receptive_field(no_dilation)

    def not_done(layers):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not done"):
        ch06.check_receptive_field(not_done)


def test_zero_stuffed_kernel_mistakes_are_diagnosed():
    def too_big(w, d):  # k d instead of (k - 1) d + 1
        k = w.shape[-1]
        out = torch.zeros(*w.shape[:-2], k * d, k * d)
        out[..., ::d, ::d] = w
        return out

    with pytest.raises(CheckFailed, match=r"\(k - 1\) d \+ 1"):
        ch06.check_zero_stuffed_kernel(too_big)

    def transposed(w, d):
        return my_zero_stuffed_kernel(w.transpose(-1, -2), d)

    with pytest.raises(CheckFailed, match="values differ"):
        ch06.check_zero_stuffed_kernel(transposed)


def test_identity_init_mistakes_are_diagnosed():
    def square_identity(conv, C):  # only where the channel indices agree
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
            n = min(conv.weight.shape[:2])
            k = conv.weight.shape[-1] // 2
            conv.weight[range(n), range(n), k, k] = 1.0

    with pytest.raises(CheckFailed, match="block of channels"):
        ch06.check_identity_init(square_identity)

    def ones(conv, C):  # the right pattern, weight 1 instead of C / c_out
        my_identity_init(conv, C)
        with torch.no_grad():
            conv.weight.copy_((conv.weight != 0).float())

    with pytest.raises(CheckFailed, match="C / c_out"):
        ch06.check_identity_init(ones)

    def keeps_bias(conv, C):
        bias = conv.bias.detach().clone()
        my_identity_init(conv, C)
        with torch.no_grad():
            conv.bias.copy_(bias)

    with pytest.raises(CheckFailed, match="bias"):
        ch06.check_identity_init(keeps_bias)


def test_separable_conv_mistakes_are_diagnosed():
    class NotDepthwise(MySeparable):
        def __init__(self, cin, cout, k=3, dilation=1):
            super().__init__(cin, cout, k, dilation)
            self.depthwise = nn.Conv2d(cin, cin, k, padding="same", dilation=dilation,
                                       bias=False)

    with pytest.raises(CheckFailed, match="each channel on its own"):
        ch07.check_separable_conv(NotDepthwise)

    class Undilated(MySeparable):
        def __init__(self, cin, cout, k=3, dilation=1):
            super().__init__(cin, cout, k, 1)

    with pytest.raises(CheckFailed, match="dilate it"):
        ch07.check_separable_conv(Undilated)

    class Unpadded(MySeparable):
        def __init__(self, cin, cout, k=3, dilation=1):
            super().__init__(cin, cout, k, dilation)
            self.depthwise = nn.Conv2d(cin, cin, k, dilation=dilation, groups=cin,
                                       bias=False)

    with pytest.raises(CheckFailed, match="pad"):
        ch07.check_separable_conv(Unpadded)


def test_aspp_mistakes_are_diagnosed():
    class NotSpread(MyASPP):
        def forward(self, x):
            pooled = self.image_pooling(self.pool(x))
            parts = [self.conv1x1(x), *[c(x) for c in self.atrous], pooled]
            return self.project(torch.cat(parts, 1))

    with pytest.raises(CheckFailed, match="spread the pooled"):
        ch07.check_aspp(NotSpread)

    class NoProjection(MyASPP):
        def forward(self, x):
            h, w = x.shape[-2:]
            pooled = self.image_pooling(self.pool(x)).expand(-1, -1, h, w)
            return torch.cat([self.conv1x1(x), *[c(x) for c in self.atrous],
                              pooled], 1)

    with pytest.raises(CheckFailed, match="projected back"):
        ch07.check_aspp(NoProjection)

    class NoImagePooling(MyASPP):
        def forward(self, x):
            parts = [self.conv1x1(x), *[c(x) for c in self.atrous],
                     torch.zeros_like(self.conv1x1(x))]
            return self.project(torch.cat(parts, 1))

    with pytest.raises(CheckFailed, match="values differ"):
        ch07.check_aspp(NoImagePooling)


def test_decoder_mistakes_are_diagnosed():
    class TimesFour(MyDecoder):
        def forward(self, x, low_level):
            up = F.interpolate(x, scale_factor=4, mode="bilinear")
            return self.fuse(torch.cat([up, self.low_level_proj(low_level)], 1))

    with pytest.raises(CheckFailed, match="not always exactly 4x"):
        ch07.check_decoder(TimesFour)

    class LowFirst(MyDecoder):
        def forward(self, x, low_level):
            up = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear")
            return self.fuse(torch.cat([self.low_level_proj(low_level), up], 1))

    with pytest.raises(CheckFailed, match="ASPP features come first"):
        ch07.check_decoder(LowFirst)

    class Corners(MyDecoder):
        def forward(self, x, low_level):
            up = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear",
                               align_corners=True)
            return self.fuse(torch.cat([up, self.low_level_proj(low_level)], 1))

    with pytest.raises(CheckFailed, match="aligning the corners"):
        ch07.check_decoder(Corners)
