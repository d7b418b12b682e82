"""SegNet (chapter 05): max unpooling against F.max_unpool2d and a naive loop
(ties, odd sizes), the model's shapes, parameter count, torchvision-format
weights, and the memory its decoder keeps."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from torchvision_format import CFG_D, vgg_state_dict

from utils.models import MODELS, load_torchvision
from utils.models.segnet import SegNet, max_unpool
from utils.models.unet import UNet


def naive_unpool(x, indices, size):
    """Loop over every pooled value and write it at its flat index."""
    B, C, h, w = x.shape
    out = torch.zeros(B, C, size[0] * size[1])
    for b in range(B):
        for c in range(C):
            for i in range(h):
                for j in range(w):
                    out[b, c, indices[b, c, i, j]] = x[b, c, i, j]
    return out.view(B, C, *size)


@pytest.mark.parametrize("size, ceil", [((6, 8), False), ((5, 7), True),
                                        ((5, 7), False), ((1, 1), True),
                                        ((9, 4), True)])
def test_unpool_equals_max_unpool2d_and_a_loop(size, ceil):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g)
    pooled, indices = F.max_pool2d(x, 2, ceil_mode=ceil, return_indices=True)
    values = torch.randn(pooled.shape, generator=g)  # a decoder's, not the maxima
    got = max_unpool(values, indices, size)
    assert torch.equal(got, F.max_unpool2d(values, indices, 2, output_size=size))
    assert torch.equal(got, naive_unpool(values, indices, size))
    # unpooling positive maxima and pooling again gives them back
    positive, indices = F.max_pool2d(x.abs() + 0.1, 2, ceil_mode=ceil,
                                     return_indices=True)
    again = F.max_pool2d(max_unpool(positive, indices, size), 2, ceil_mode=ceil)
    assert torch.equal(again, positive)


def test_ties_keep_the_first_maximum_of_each_window():
    """torch's max-pool records the first maximum in the window's row-major
    order; unpooling then puts the value there and zeros at the other tied
    positions."""
    x = torch.tensor([[[[1.0, 1.0, 0.0, 2.0],
                        [1.0, 1.0, 2.0, 2.0]]]])
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    assert indices.tolist() == [[[[0, 3]]]]
    got = max_unpool(pooled, indices, (2, 4))
    assert got.tolist() == [[[[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]]]
    g = torch.Generator().manual_seed(1)
    ties = torch.randint(0, 2, (2, 4, 8, 6), generator=g).float()
    pooled, indices = F.max_pool2d(ties, 2, return_indices=True)
    got = max_unpool(pooled, indices, (8, 6))
    assert torch.equal(got, F.max_unpool2d(pooled, indices, 2, output_size=(8, 6)))
    # one non-zero per window at most, even where the window had four ones
    per_window = F.avg_pool2d((got != 0).float(), 2) * 4
    assert per_window.max() == 1


def test_the_output_size_is_needed_for_odd_sides():
    x = torch.rand(1, 1, 5, 5) + 0.1
    pooled, indices = F.max_pool2d(x, 2, ceil_mode=True, return_indices=True)
    assert pooled.shape[-2:] == (3, 3)  # like a 6x6 map's
    right = max_unpool(pooled, indices, (5, 5))
    assert torch.equal(F.max_pool2d(right, 2, ceil_mode=True), pooled)
    # read as a 6-wide map, the same flat indices land on other pixels
    wrong = max_unpool(pooled, indices, (6, 6))[..., :5, :5]
    assert not torch.equal(wrong, right)
    with pytest.raises(ValueError, match="output_size"):
        max_unpool(pooled, indices, (2, 2))
    with pytest.raises(ValueError, match="int64"):
        max_unpool(pooled, indices.int(), (5, 5))


@pytest.mark.parametrize("size", [(1, 1), (31, 47), (65, 33), (64, 96)])
def test_segnet_keeps_any_size(size):
    for model in (SegNet(5, width=1 / 16), MODELS["segnet"](5, width=0.0625)):
        with torch.no_grad():
            out = model.eval()(torch.rand(2, 3, *size))
        assert out.shape == (2, 5, *size) and torch.isfinite(out).all()


def test_segnet_is_its_encoder_then_unpool_and_convolve():
    """A step-by-step recomputation with torch's own unpooling."""
    torch.manual_seed(0)
    model = SegNet(3, width=1 / 16).eval()
    x = torch.rand(2, 3, 45, 70)
    with torch.no_grad():
        f = model.encoder((x - model.mean) / model.std, return_indices=True)
        y = f["pool5"]
        for n in range(5, 0, -1):
            y = F.max_unpool2d(y, f[f"indices{n}"], 2,
                               output_size=f[f"conv{n}"].shape[-2:])
            y = getattr(model, f"decoder{n}")(y)
        assert torch.equal(model(x), y)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(layers) == 26  # 13 in the encoder, 12 in the decoder, 1 classifier


def test_parameter_count_at_width_1():
    """The paper's 29.5M (CamVid, 11 classes), counted layer by layer: the
    encoder's 13 convolutions with batch norm, the decoder's 12 with batch
    norm, and a final 3x3 convolution to the classes."""
    def conv(a, b):
        return 9 * a * b + b

    encoder = [(a, b) for a, b in zip([3] + [v for v in CFG_D if v != "M"][:-1],
                                      [v for v in CFG_D if v != "M"])]
    decoder = [(512, 512), (512, 512), (512, 512), (512, 512), (512, 512),
               (512, 256), (256, 256), (256, 256), (256, 128), (128, 128),
               (128, 64), (64, 64)]
    K = 11
    weights = sum(conv(a, b) for a, b in encoder + decoder) + conv(64, K)
    norms = sum(2 * b for _, b in encoder + decoder)  # scale and shift
    with torch.device("meta"):
        model = SegNet(K)
    got = sum(p.numel() for p in model.parameters())
    assert got == weights + norms == 29_449_355
    stats = sum(m.running_mean.numel() + m.running_var.numel()
                for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert got + stats == 29_465_227  # 29.5M with the batch-norm statistics


def reference_vgg16_bn_pool5(sd, x):
    """torchvision's vgg16_bn features (evaluation) from its state dict, with
    ceil-mode pools (equal to torchvision's on sides divisible by 32)."""
    index = 0
    for v in CFG_D:
        if v == "M":
            x = F.max_pool2d(x, 2, ceil_mode=True)
            index += 1
            continue
        x = F.conv2d(x, sd[f"features.{index}.weight"], sd[f"features.{index}.bias"],
                     padding=1)
        p = f"features.{index + 1}"
        x = F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"],
                         sd[f"{p}.weight"], sd[f"{p}.bias"], training=False)
        x = F.relu(x)
        index += 3
    return x


def test_torchvision_vgg16_bn_weights_load_into_the_encoder(tmp_path):
    sd = vgg_state_dict(width=1 / 16, batch_norm=True, seed=3)
    path = tmp_path / "vgg16_bn.pth"
    torch.save(sd, path)
    model = SegNet(4, width=1 / 16)
    decoder_before = model.decoder1.classifier.weight.clone()
    model.load_pretrained(path)
    model.eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        got = model.encoder((x - model.mean) / model.std)["pool5"]
        expected = reference_vgg16_bn_pool5(sd, (x - model.mean) / model.std)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(model.decoder1.classifier.weight, decoder_before)
    with pytest.raises(ValueError, match="features"):
        load_torchvision(SegNet(4, width=1 / 16), vgg_state_dict(1 / 16, seed=3))


def test_indices_keep_half_the_bytes_of_unets_maps_per_stage():
    """The chapter's memory table: int64 indices of a 2x2 pool are a quarter
    of the values at twice the bytes of U-Net's float32 map at each stage
    (exactly, where the stage's sides are even: 384 x 512 here)."""
    with torch.device("meta"), torch.no_grad():
        x = torch.empty(1, 3, 384, 512)
        f = SegNet(11).encoder(x, return_indices=True)
        unet = UNet(2, width=1.0, padding="same")
        y, kept = x, []
        for n, block in enumerate([unet.down1, unet.down2, unet.down3, unet.down4]):
            y = block(y if n == 0 else unet.pool(y))
            kept.append(y.numel() * y.element_size())
    for n in range(1, 5):
        indices = f[f"indices{n}"]
        assert indices.dtype == torch.int64
        assert 2 * indices.numel() * indices.element_size() == kept[n - 1]


def test_segnet_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        SegNet(3, width=1 / 16)(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        SegNet(0)
