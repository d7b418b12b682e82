"""U-Net (chapter 04): output-size arithmetic, legal sizes, the receptive
field, the parameter count, mirror padding and overlap-tile inference."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.models import MODELS
from utils.models.unet import (
    MARGIN,
    UNet,
    center_crop,
    crop_and_concat,
    legal_sizes,
    mirror_pad,
    output_size,
    overlap_tile_predict,
)


def simulate(size):
    """Layer by layer with the convolution rule floor((n - k) / s) + 1; None
    where a map before a pooling is odd or a map vanishes."""

    def conv(n, k=3, s=1):
        return (n - k) // s + 1

    n = size
    for _ in range(4):
        n = conv(conv(n))
        if n < 2 or n % 2:
            return None
        n = conv(n, 2, 2)
    n = conv(conv(n))
    for _ in range(4):
        n = (n - 1) * 2 + 2  # transposed convolution k = 2, s = 2
        n = conv(conv(n))
    return n if n >= 1 else None


def test_the_papers_tile_572_gives_388():
    assert output_size(572) == 388 == simulate(572)
    model = UNet(2, in_channels=1, width=1 / 32).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_legal_sizes_are_16k_plus_60_from_188():
    legal = [s for s in range(1, 700) if simulate(s) is not None]
    assert legal == legal_sizes(699)
    assert legal[0] == 188 and all(s % 16 == 60 % 16 for s in legal)
    for s in legal:
        assert output_size(s) == simulate(s) == s - 2 * MARGIN
    for s in (187, 189, 200, 570, 573):
        with pytest.raises(ValueError, match="nearest legal"):
            output_size(s)


def test_an_illegal_input_is_a_clear_error():
    model = UNet(2, width=1 / 32)
    with pytest.raises(ValueError, match="204 or 220"):
        model(torch.rand(1, 3, 210, 220))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(1, 1, 188, 188))
    with pytest.raises(ValueError, match="padding"):
        UNet(2, padding="reflect")


def receptive_interval(i, size):
    """Rows of the input that output row ``i`` depends on, by interval
    arithmetic through the valid U-Net for an input of ``size`` rows: a 3x3
    convolution maps output rows [a, b] to input rows [a, b + 2], a 2x2 pool
    to [2a, 2b + 1], a 2x2 up-convolution to [a // 2, b // 2], a crop by c to
    [a + c, b + c], and a concatenation takes the union of its two inputs."""
    sizes = [size]  # rows of x1..x4 (after each double conv) and of the bottom
    n = size
    for _ in range(5):
        n -= 4
        sizes.append(n)
        n //= 2

    def double_conv(a, b):
        return a, b + 4

    def down(level, a, b):  # x_level (1..5) -> input rows
        a, b = double_conv(a, b)
        if level == 1:
            return a, b
        return down(level - 1, 2 * a, 2 * b + 1)

    def up(level, a, b, up_rows):  # the expanding path's output at level
        a, b = double_conv(a, b)  # into the concatenation
        c = (sizes[level] - up_rows) // 2  # the skip's crop offset
        skip = down(level, a + c, b + c)
        below = a // 2, b // 2  # through the up-convolution
        if level == 4:
            deep = down(5, *below)
        else:
            deep = up(level + 1, *below, up_rows=(up_rows + 4) // 2)
        return min(skip[0], deep[0]), max(skip[1], deep[1])

    out_rows = output_size(size)
    return up(1, i, i, up_rows=out_rows + 4)


def test_receptive_fields_lie_on_the_16_pixel_pooling_grid():
    """Made linear (ReLUs off), the gradient of output pixel (i, j) is
    non-zero exactly on the rows and columns interval arithmetic gives: a
    window of 188 or 204 pixels that starts on the 16-pixel grid, the same
    for i and i + 16 shifted by 16 (why overlap tiles must start on it)."""
    torch.manual_seed(0)
    model = UNet(1, in_channels=1, width=1 / 32).double()
    for module in list(model.modules()):
        for child, value in list(module.named_children()):
            if isinstance(value, nn.ReLU):
                setattr(module, child, nn.Identity())
    x = torch.rand(1, 1, 236, 236, dtype=torch.float64, requires_grad=True)
    out = model(x)  # (1, 1, 52, 52)
    widths = set()
    for i, j in [(0, 0), (3, 4), (7, 12), (16, 20), (23, 35), (51, 51)]:
        x.grad = None
        out[0, 0, i, j].backward(retain_graph=True)
        nonzero = x.grad[0, 0] != 0
        rows = nonzero.any(1).nonzero()[:, 0]
        cols = nonzero.any(0).nonzero()[:, 0]
        assert (rows.min(), rows.max()) == receptive_interval(i, 236)
        assert (cols.min(), cols.max()) == receptive_interval(j, 236)
        widths.add(int(rows.max() - rows.min() + 1))
        assert rows.min() % 16 == 0 and rows.min() == 16 * (i // 16)
    assert widths == {188, 204}


def test_parameter_count_at_width_1():
    """No count is printed in the paper; counted here layer by layer: 3x3
    convolutions and 2x2 up-convolutions with biases, a 1x1 classifier."""
    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def count(cin, classes):
        c = [64, 128, 256, 512, 1024]
        n = conv(cin, 64, 3) + conv(64, 64, 3)
        for a, b in zip(c, c[1:]):  # contracting path and bottom
            n += conv(a, b, 3) + conv(b, b, 3)
        for a, b in zip(c[::-1], c[::-1][1:]):  # expanding path
            n += conv(a, b, 2) + conv(2 * b, b, 3) + conv(b, b, 3)
        return n + conv(64, classes, 1)

    for cin, classes, expected in [(1, 2, 31_030_658), (3, 1, 31_031_745)]:
        with torch.device("meta"):
            model = UNet(classes, in_channels=cin)
        got = sum(p.numel() for p in model.parameters())
        assert got == count(cin, classes) == expected
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d,
                                                          nn.ConvTranspose2d))]
    assert len(convs) == 23  # "In total the network has 23 convolutional layers"


@pytest.mark.parametrize("size", [(1, 1), (31, 47), (65, 33), (64, 96)])
def test_same_padding_keeps_any_size(size):
    for model in (UNet(7, width=1 / 16, padding="same"),
                  MODELS["unet"](7, width=0.0625)):
        with torch.no_grad():
            out = model.eval()(torch.rand(2, 3, *size))
        assert out.shape == (2, 7, *size) and torch.isfinite(out).all()


def test_valid_model_on_odd_legal_sizes():
    model = UNet(3, in_channels=2, width=1 / 32).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 2, 188, 236))
    assert out.shape == (2, 3, 4, 52)


def test_center_crop_and_concat():
    skip = torch.arange(2 * 9 * 8.0).view(1, 2, 9, 8)
    up = -torch.ones(1, 3, 4, 5)
    joined = crop_and_concat(skip, up)
    assert joined.shape == (1, 5, 4, 5)
    # offsets (9 - 4) // 2 = 2 rows and (8 - 5) // 2 = 1 column
    assert torch.equal(joined[:, :2], skip[:, :, 2:6, 1:6])
    assert torch.equal(joined[:, 2:], up)
    assert torch.equal(center_crop(skip, (9, 8)), skip)
    with pytest.raises(ValueError, match="too small"):
        center_crop(up, (5, 5))


def naive_reflect(n, i):
    """Reflect index i into [0, n) by walking back and forth."""
    pos, direction = 0, 1
    for _ in range(abs(i)):
        if not 0 <= pos + direction < n:
            direction = -direction
        pos += direction
    if i >= 0:
        return pos
    return naive_reflect(n, -i)  # the mirror is symmetric about 0


def test_mirror_pad_is_reflect_padding_of_any_width():
    x = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(mirror_pad(x, 2, 3, 4, 1),
                               F.pad(x, (4, 1, 2, 3), mode="reflect"))
    got = mirror_pad(x, 11, 9, 20, 0)  # wider than the image: mirrored again
    assert got.shape == (2, 3, 25, 27)
    for r in range(25):
        for c in range(27):
            source = x[..., naive_reflect(5, r - 11), naive_reflect(7, c - 20)]
            torch.testing.assert_close(got[..., r, c], source)
    with pytest.raises(ValueError, match="1x7"):
        mirror_pad(torch.rand(1, 7), 1, 0, 0, 0)


@pytest.mark.parametrize("size", [(84, 68), (70, 50), (36, 36), (5, 40)])
def test_overlap_tile_equals_one_pass_over_the_mirror_padded_image(size):
    torch.manual_seed(1)
    model = UNet(2, width=1 / 16).eval()
    H, W = size
    image = torch.rand(1, 3, H, W)
    tiled = overlap_tile_predict(model, image, tile=36, step=32)
    # one pass: pad to the next legal size (H + 184 = 16 k + 60) and crop
    extra_h, extra_w = (-(H - 4)) % 16, (-(W - 4)) % 16
    with torch.no_grad():
        whole = model(mirror_pad(image, MARGIN, MARGIN + extra_h, MARGIN,
                                 MARGIN + extra_w))[..., :H, :W]
    assert tiled.shape == whole.shape == (1, 2, H, W)
    torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-5)


def test_overlap_tile_refuses_a_step_off_the_pooling_grid():
    model = UNet(2, width=1 / 16).eval()
    with pytest.raises(ValueError, match="multiple of 16"):
        overlap_tile_predict(model, torch.rand(1, 3, 40, 40), tile=36, step=20)
    with pytest.raises(ValueError, match="nearest legal"):
        overlap_tile_predict(model, torch.rand(1, 3, 40, 40), tile=40)
