"""DeepLabV3, DeepLabV3+ and PSPNet (chapter 07).

- the separable convolution's parameters and FLOPs against the formulas and
  torch's FLOP counter, and against a standard convolution with the composed
  kernel;
- ASPP's claims: image pooling is constant over the map, a branch whose rate
  reaches past the map degenerates to its centre tap;
- output shapes on odd sizes at output stride 16 and 8, with and without the
  decoder, and PSPNet's;
- torchvision's ``deeplabv3_resnet50`` weights: a state dict with its keys and
  shapes (written out below from torchvision's layout, random values) through
  ``load_torchvision``, against a functional DeepLabV3 that reads the state
  dict layer by layer (torchvision's ``DeepLabHead`` and
  ``_SimpleSegmentationModel.forward``).
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from test_backbones import assert_maps_close, resnet_reference
from torchvision_format import bn, he, random_bn, resnet_state_dict

from utils.flops import count_flops
from utils.models import MODELS, load_torchvision
from utils.models.deeplab import (
    ASPP,
    ATROUS_RATES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Decoder,
    DeepLabV3Plus,
    SeparableConv2d,
    deeplabv3,
)
from utils.models.pspnet import PSPNet, PyramidPooling

# ------------------------------------------------------- separable convolution


@pytest.mark.parametrize("cin, cout, k, d", [(32, 64, 3, 1), (16, 48, 3, 6),
                                             (8, 8, 5, 2)])
def test_separable_convolution_cost_matches_the_formulas(cin, cout, k, d):
    H, W = 17, 23
    sep = SeparableConv2d(cin, cout, k, d)
    std = nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d, bias=False)
    assert sum(p.numel() for p in sep.parameters()) == k * k * cin + cin * cout
    assert sum(p.numel() for p in std.parameters()) == k * k * cin * cout
    x = torch.zeros(1, cin, H, W)
    # 2 FLOPs per multiply-accumulate, one per weight and output position
    assert count_flops(sep, x) == 2 * H * W * (k * k * cin + cin * cout)
    assert count_flops(std, x) == 2 * H * W * k * k * cin * cout
    ratio = count_flops(sep, x) / count_flops(std, x)
    assert math.isclose(ratio, 1 / cout + 1 / k ** 2)


@pytest.mark.parametrize("d", [1, 3])
def test_separable_convolution_is_a_standard_one_with_a_composed_kernel(d):
    torch.manual_seed(d)
    sep = SeparableConv2d(5, 7, 3, d)
    D = sep.depthwise.weight[:, 0]  # (5, 3, 3): one spatial filter per channel
    P = sep.pointwise.weight[:, :, 0, 0]  # (7, 5)
    composed = P[:, :, None, None] * D[None]  # (7, 5, 3, 3), rank one per pair
    x = torch.randn(2, 5, 19, 14)
    with torch.no_grad():
        torch.testing.assert_close(sep(x), F.conv2d(x, composed, padding=d,
                                                    dilation=d), atol=1e-5,
                                   rtol=1e-4)


# ------------------------------------------------------------------- ASPP


def test_image_pooling_is_constant_and_far_rates_degenerate_to_the_centre_tap():
    torch.manual_seed(0)
    aspp = ASPP(6, rates=(1, 8), out_channels=4).eval()
    x = torch.randn(2, 6, 7, 5)  # both sides smaller than 8
    with torch.no_grad():
        pooled = aspp.image_pooling(aspp.pool(x))
        assert pooled.shape == (2, 4, 1, 1)
        far = aspp.atrous[1]
        centre = F.conv2d(x, far.conv.weight[:, :, 1:2, 1:2])
        torch.testing.assert_close(far.conv(x), centre, atol=1e-6, rtol=1e-5)
        # ... while rate 1 uses its neighbours
        near = aspp.atrous[0]
        assert not torch.allclose(near.conv(x),
                                  F.conv2d(x, near.conv.weight[:, :, 1:2, 1:2]))
        # the concatenation the projection sees: pooled branch constant
        out = aspp(x)
        assert out.shape == (2, 4, 7, 5)


def test_aspp_forward_against_its_branches():
    torch.manual_seed(1)
    aspp = ASPP(6, rates=(2, 3), out_channels=4).eval()
    x = torch.randn(1, 6, 9, 8)
    with torch.no_grad():
        pooled = aspp.image_pooling(x.mean((2, 3), keepdim=True))
        branches = [aspp.conv1x1(x), *(c(x) for c in aspp.atrous),
                    pooled.expand(-1, -1, 9, 8)]
        expected = aspp.project(torch.cat(branches, 1))
        torch.testing.assert_close(aspp(x), expected)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("decoder", [True, False])
def test_deeplab_output_shapes_on_odd_sizes(output_stride, decoder):
    model = DeepLabV3Plus(5, output_stride=output_stride, decoder=decoder,
                          width=0.0625).eval()
    assert model.aspp.rates == ATROUS_RATES[output_stride]
    for size in [(45, 71), (50, 61), (33, 17)]:
        with torch.no_grad():
            out = model(torch.rand(2, 3, *size))
        assert out.shape == (2, 5, *size)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_pspnet_output_shapes_and_pyramid(output_stride):
    model = PSPNet(5, output_stride=output_stride, width=0.0625).eval()
    for size in [(45, 71), (33, 17)]:
        with torch.no_grad():
            assert model(torch.rand(2, 3, *size)).shape == (2, 5, *size)
    ppm = PyramidPooling(8).eval()
    assert [s[0].output_size for s in ppm.stages] == [1, 2, 3, 6]
    x = torch.randn(2, 8, 7, 11)
    with torch.no_grad():
        y = ppm(x)
        assert y.shape == (2, 16, 7, 11)
        assert torch.equal(y[:, :8], x)  # the features themselves come first
        one = y[:, 8:10]  # the 1x1 bin: the same vector everywhere
        assert torch.allclose(one, one[..., :1, :1].expand_as(one))


def test_fresh_residual_blocks_are_the_identity():
    """zero_init_residual_: a block without a projection passes its
    (non-negative) input on; the models trained from scratch start so."""
    for model in (DeepLabV3Plus(4, width=0.0625), PSPNet(4, width=0.0625)):
        block = model.backbone.layer3[1]
        assert block.downsample is None and not block.bn3.weight.any()
        x = torch.rand(2, block.conv1.in_channels, 5, 6)
        with torch.no_grad():
            assert torch.equal(block.eval()(x), x)


def test_decoder_upsamples_to_the_low_level_size():
    dec = Decoder(12, 8, 4).eval()
    with torch.no_grad():
        out = dec(torch.randn(1, 8, 4, 4), torch.randn(1, 12, 13, 16))
    assert out.shape == (1, 8, 13, 16)


def test_registry_and_bad_arguments():
    assert MODELS["deeplabv3"](4, width=0.0625).decoder is None
    assert MODELS["deeplabv3plus"](4, width=0.0625).decoder is not None
    assert isinstance(MODELS["pspnet"](4, width=0.0625), PSPNet)
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3Plus(4, output_stride=32)
    with pytest.raises(ValueError, match="backbone"):
        DeepLabV3Plus(4, backbone="vgg16")
    with pytest.raises(ValueError, match="image batch"):
        deeplabv3(4, width=0.0625)(torch.rand(1, 1, 32, 32))


def test_separable_variant_is_cheaper_and_has_no_torchvision_weights():
    std = DeepLabV3Plus(5, width=0.25)
    sep = DeepLabV3Plus(5, width=0.25, separable=True)
    count = [sum(p.numel() for p in m.parameters()) for m in (std, sep)]
    assert count[1] < 0.8 * count[0]
    with pytest.raises(ValueError, match="separable"):
        sep.torchvision_keys()


# ------------------------------------------------- torchvision's DeepLabV3


def deeplabv3_state_dict(num_classes=21, width=1.0, seed=0):
    """torchvision ``deeplabv3_resnet50(aux_loss=True)``: keys, order and
    shapes, random values. The backbone is resnet50 without ``fc`` under
    ``backbone.``; ``classifier`` is DeepLabHead (ASPP: ``convs.0`` 1x1,
    ``convs.1..3`` 3x3, ``convs.4`` pooling whose conv is index 1, then
    ``project``; then a 3x3 conv, batch norm, ReLU, the scores);
    ``aux_classifier`` is FCNHead on layer3."""
    g = torch.Generator().manual_seed(seed + 100)
    sd = {f"backbone.{k}": v for k, v in resnet_state_dict(50, width, seed).items()
          if not k.startswith("fc.")}
    c4, c3 = round(2048 * width), round(1024 * width)
    c = max(1, round(256 * width))
    sd["classifier.0.convs.0.0.weight"] = he((c, c4, 1, 1), g)
    random_bn(sd, "classifier.0.convs.0.1", c, g)
    for i in (1, 2, 3):
        sd[f"classifier.0.convs.{i}.0.weight"] = he((c, c4, 3, 3), g)
        random_bn(sd, f"classifier.0.convs.{i}.1", c, g)
    sd["classifier.0.convs.4.1.weight"] = he((c, c4, 1, 1), g)
    random_bn(sd, "classifier.0.convs.4.2", c, g)
    sd["classifier.0.project.0.weight"] = he((c, 5 * c, 1, 1), g)
    random_bn(sd, "classifier.0.project.1", c, g)
    sd["classifier.1.weight"] = he((c, c, 3, 3), g)
    random_bn(sd, "classifier.2", c, g)
    sd["classifier.4.weight"] = he((num_classes, c, 1, 1), g)
    sd["classifier.4.bias"] = 0.1 * torch.randn(num_classes, generator=g)
    sd["aux_classifier.0.weight"] = he((c, c3, 3, 3), g)
    random_bn(sd, "aux_classifier.1", c, g)
    sd["aux_classifier.4.weight"] = he((num_classes, c, 1, 1), g)
    sd["aux_classifier.4.bias"] = torch.zeros(num_classes)
    return sd


def deeplabv3_reference(sd, image, rates=(12, 24, 36)):
    """torchvision's DeepLabV3 at output stride 8 on a normalised image."""
    backbone = {k[len("backbone."):]: v for k, v in sd.items()
                if k.startswith("backbone.")}
    c4 = sd["classifier.0.convs.0.0.weight"].shape[1]
    backbone["fc.weight"], backbone["fc.bias"] = torch.zeros(1, c4), torch.zeros(1)
    x = resnet_reference(backbone, image, 50, 8)["layer4"]
    h, w = x.shape[-2:]

    def cbr(y, p, conv, norm, **kw):
        y = F.conv2d(y, sd[f"{p}.{conv}.weight"], **kw)
        return F.relu(bn(y, sd, f"{p}.{norm}"))

    a = "classifier.0.convs"
    branches = [cbr(x, f"{a}.0", 0, 1)]
    for i, r in enumerate(rates, start=1):
        branches.append(cbr(x, f"{a}.{i}", 0, 1, padding=r, dilation=r))
    pooled = cbr(F.adaptive_avg_pool2d(x, 1), f"{a}.4", 1, 2)
    branches.append(F.interpolate(pooled, size=(h, w), mode="bilinear",
                                  align_corners=False))
    y = cbr(torch.cat(branches, 1), "classifier.0.project", 0, 1)
    y = F.relu(bn(F.conv2d(y, sd["classifier.1.weight"], padding=1), sd,
                  "classifier.2"))
    y = F.conv2d(y, sd["classifier.4.weight"], sd["classifier.4.bias"])
    return F.interpolate(y, size=image.shape[-2:], mode="bilinear",
                         align_corners=False)


def normalise(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def test_deeplabv3_loads_torchvisions_file_and_gives_its_outputs():
    """Full width (the real file's shapes), output stride 8 (torchvision's)."""
    sd = deeplabv3_state_dict(21)
    model = deeplabv3(21, output_stride=8).eval()
    load_torchvision(model, sd)
    x = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = model(x)
        expected = deeplabv3_reference(sd, normalise(x))
    assert got.shape == (1, 21, 45, 70)
    assert_maps_close(got, expected)


def test_torchvision_file_into_other_heads(tmp_path):
    """Other class counts keep their own scores; DeepLabV3+ takes backbone and
    ASPP from the file; an ImageNet ResNet file fills the backbone only."""
    w = 0.0625
    sd = deeplabv3_state_dict(21, width=w, seed=1)
    path = tmp_path / "deeplabv3.pth"
    torch.save(sd, path)
    v3 = deeplabv3(8, output_stride=8, width=w)
    scores = v3.classifier.weight.clone()
    v3.load_pretrained(path)
    assert torch.equal(v3.classifier.weight, scores)
    torch.testing.assert_close(v3.head.conv.weight.data, sd["classifier.1.weight"])
    plus = DeepLabV3Plus(8, output_stride=16, width=w)
    decoder = {k: v.clone() for k, v in plus.decoder.state_dict().items()}
    plus.load_pretrained(path)
    torch.testing.assert_close(plus.aspp.image_pooling.conv.weight.data,
                               sd["classifier.0.convs.4.1.weight"])
    torch.testing.assert_close(plus.aspp.atrous[2].bn.running_var.data,
                               sd["classifier.0.convs.3.1.running_var"])
    assert all(torch.equal(plus.decoder.state_dict()[k], v) for k, v in decoder.items())
    imagenet = tmp_path / "resnet50.pth"
    torch.save(resnet_state_dict(50, w, seed=2), imagenet)
    psp = PSPNet(8, width=w)
    head = psp.head.conv.weight.clone()
    psp.load_pretrained(imagenet)
    plus.load_pretrained(imagenet)
    resnet = torch.load(imagenet)
    for model in (psp, plus):
        torch.testing.assert_close(model.backbone.layer3[1].conv2.weight.data,
                                   resnet["layer3.1.conv2.weight"])
    assert torch.equal(psp.head.conv.weight, head)


def test_wrong_torchvision_file_is_listed():
    sd = deeplabv3_state_dict(21, width=0.0625)
    del sd["classifier.0.project.0.weight"]
    sd["classifier.1.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(ValueError) as err:
        load_torchvision(deeplabv3(21, output_stride=8, width=0.0625), sd)
    assert "missing keys (1): classifier.0.project.0.weight" in str(err.value)
    assert "wrong shape classifier.1.weight" in str(err.value)
