"""VGG16, torchvision-format weight loading and FCN-32s/16s/8s (chapter 03).

The reference for the weight loading is an independent functional VGG16 that
reads torchvision's state dict directly, layer by layer, as torchvision's
``vgg16`` computes it (features 0..30, adaptive average pool to 7x7, flatten,
classifier.0, ReLU, classifier.3, ReLU; dropout off).
"""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from torchvision_format import CFG_D, vgg_state_dict

from utils.models import MODELS, VGG16, FCN8s, FCN16s, FCN32s, load_torchvision
from utils.models.fcn import crop_like
from utils.models.upsampling import (
    bilinear_kernel,
    bilinear_upsampling,
    bilinear_weight,
)


def reference_pool5(sd, x):
    """torchvision's ``features`` computed from the state dict."""
    index = 0
    for v in CFG_D:
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
            index += 1
        else:
            x = F.relu(F.conv2d(x, sd[f"features.{index}.weight"],
                                sd[f"features.{index}.bias"], padding=1))
            index += 2
    assert index == 31  # features.0 .. features.30
    return x


def reference_classifier_fc7(sd, pool5_7x7):
    """classifier.0 -> ReLU -> classifier.3 -> ReLU on ``[N, C, 7, 7]``."""
    x = pool5_7x7.flatten(1)
    x = F.relu(F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    return F.relu(F.linear(x, sd["classifier.3.weight"], sd["classifier.3.bias"]))


def reference_fc7(sd, x):
    """torchvision vgg16's fc7 activations (eval mode) for images ``x``."""
    pool5 = F.adaptive_avg_pool2d(reference_pool5(sd, x), (7, 7))
    return reference_classifier_fc7(sd, pool5)


def test_full_width_vgg16_gives_torchvision_fc7_at_224():
    sd = vgg_state_dict(1.0)
    model = VGG16(1.0).eval()
    load_torchvision(model, sd)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)["fc7"]
        expected = reference_fc7(sd, x)
    assert ours.shape == (2, 4096, 7, 7)  # fc6 is a "same" 7x7 conv on pool5
    # The centre position's 7x7 window is exactly the whole 7x7 pool5 map.
    got = ours[:, :, 3, 3]
    assert expected.abs().max() > 0.1  # the comparison is not of zeros
    torch.testing.assert_close(got, expected, rtol=1e-4,
                               atol=1e-5 * expected.abs().max().item())


def test_convolutionalised_fc_equals_classifier_on_every_window():
    """On a larger input each fc7 position is the linear classifier applied to
    its 7x7 window of pool5 (zero-padded by 3, as fc6 is)."""
    sd = vgg_state_dict(0.125, seed=2)
    model = VGG16(0.125).eval()
    load_torchvision(model, sd)
    x = torch.randn(1, 3, 320, 256, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(x)["fc7"]  # (1, 512, 10, 8)
        pool5 = reference_pool5(sd, x)
        windows = F.unfold(F.pad(pool5, (3, 3, 3, 3)), 7)  # (1, C*49, 80)
        C = pool5.shape[1]
        windows = windows.transpose(1, 2).reshape(-1, C, 7, 7)
        expected = reference_classifier_fc7(sd, windows)  # (80, 512)
    expected = expected.view(10, 8, -1).permute(2, 0, 1)[None]
    assert ours.shape == expected.shape == (1, 512, 10, 8)
    torch.testing.assert_close(ours, expected, rtol=1e-4,
                               atol=1e-5 * expected.abs().max().item())
    # an interior position's window holds no padding: it is the classifier
    # applied to a genuine 7x7 block of pool5
    inner = reference_classifier_fc7(sd, pool5[:, :, 2:9, 1:8])
    torch.testing.assert_close(ours[0, :, 5, 4], inner[0], rtol=1e-4,
                               atol=1e-5 * inner.abs().max().item())


def test_loading_from_a_file_and_into_an_fcn(tmp_path):
    sd = vgg_state_dict(0.125, seed=4)
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    fcn = FCN8s(5, width=0.125)
    fcn.load_pretrained(path)
    torch.testing.assert_close(fcn.backbone.conv5.conv5_3.weight,
                               sd["features.28.weight"])
    torch.testing.assert_close(fcn.backbone.fc6.weight.flatten(1),
                               sd["classifier.0.weight"])
    torch.testing.assert_close(fcn.backbone.fc7.bias, sd["classifier.3.bias"])


def test_wrong_keys_and_shapes_are_listed():
    sd = vgg_state_dict(0.125)
    bad = dict(sd)
    del bad["features.0.weight"]
    bad["features.1.running_mean"] = torch.zeros(8)  # a vgg16_bn key
    bad["classifier.3.weight"] = torch.zeros(3, 3)
    model = VGG16(0.125)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_torchvision(model, bad)
    message = str(err.value)
    assert "features.0.weight" in message and "missing" in message
    assert "features.1.running_mean" in message and "unexpected" in message
    assert "classifier.3.weight: expected [512, 512], got [3, 3]" in message
    for k, v in model.state_dict().items():  # nothing copied on error
        torch.testing.assert_close(v, snapshot[k])
    with pytest.raises(ValueError, match="features.2.bias: expected a tensor"):
        load_torchvision(VGG16(0.125), {**sd, "features.2.bias": [0.0]})
    with pytest.raises(ValueError, match="width=1.0"):
        load_torchvision(VGG16(0.125), vgg_state_dict(0.25))
    with pytest.raises(FileNotFoundError, match="data_scripts"):
        load_torchvision(VGG16(0.125), "/nonexistent/vgg16.pth")
    with pytest.raises(TypeError, match="torchvision_keys"):
        load_torchvision(torch.nn.Linear(2, 2), sd)


def test_fcn8s_full_width_has_the_papers_parameter_count():
    """134M in the paper; counted here layer by layer from the architecture."""
    with torch.device("meta"):
        model = FCN8s(21)
    got = sum(p.numel() for p in model.parameters())
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
             (256, 256), (256, 512), (512, 512), (512, 512), (512, 512),
             (512, 512), (512, 512)]  # fmt: skip
    expected = sum(9 * a * b + b for a, b in convs)
    expected += 49 * 512 * 4096 + 4096 + 4096 * 4096 + 4096  # fc6, fc7
    expected += (4096 + 1) * 21 + (512 + 1) * 21 + (256 + 1) * 21  # score layers
    expected += 21 * 21 * (4 * 4 + 4 * 4 + 16 * 16)  # upscore2, _pool4, 8
    assert got == expected == 134_489_759


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "patch_cnn"])
@pytest.mark.parametrize("size", [(1, 1), (31, 47), (65, 33), (64, 96)])
def test_dense_output_shape_on_odd_sizes(name, size):
    model = MODELS[name](7, width=0.0625).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7, *size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_backbone_feature_sizes_round_up():
    model = VGG16(0.0625).eval()
    with torch.no_grad():
        f = model(torch.rand(1, 3, 65, 33))
    assert f["pool3"].shape[-2:] == (9, 5)
    assert f["pool4"].shape[-2:] == (5, 3)
    assert f["pool5"].shape[-2:] == f["fc7"].shape[-2:] == (3, 2)


def test_skip_layers_start_at_zero_and_untrained_skips_change_nothing():
    """Zero-initialised score layers: FCN-8s equals FCN-16s with the same
    weights at start, and training moves only the skip branches apart."""
    torch.manual_seed(0)
    f16 = FCN16s(4, width=0.0625).eval()
    f8 = FCN8s(4, width=0.0625).eval()
    f8.load_state_dict(f16.state_dict(), strict=False)
    with torch.no_grad():
        f16.score_fr.weight.normal_()  # non-zero coarse scores
        f8.score_fr.weight.copy_(f16.score_fr.weight)
        x = torch.rand(1, 3, 70, 45)
        a = f16(x)
        # FCN-8s with a zero score_pool3 upsamples fuse_pool4 by 2 then by 8;
        # FCN-16s by 16 in one go: equal in the interior (both bilinear).
        b = f8(x)
    assert a.abs().max() > 0
    torch.testing.assert_close(a[..., 24:-24, 24:-24], b[..., 24:-24, 24:-24],
                               rtol=1e-4, atol=1e-6)


def test_fcn_fusion_against_a_step_by_step_recomputation():
    """FCN-8s = crop(up8(crop(up2(crop(up2(score_fr)) + s4)) + s3)) with
    interpolation standing in for the bilinear transposed convolutions."""
    torch.manual_seed(1)
    m = FCN8s(3, width=0.0625).eval()
    with torch.no_grad():
        for layer in (m.score_fr, m.score_pool4, m.score_pool3):
            layer.weight.normal_()
            layer.bias.normal_()
        x = torch.rand(1, 3, 256, 320)  # multiples of 32: no crops needed
        f = m.features(x)

        def up(t, s):
            return F.interpolate(t, scale_factor=s, mode="bilinear",
                                 align_corners=False)

        s = up(m.score_fr(f["fc7"]), 2) + m.score_pool4(f["pool4"])
        s = up(s, 2) + m.score_pool3(f["pool3"])
        expected = up(s, 8)
        got = m(x)
    # transposed convolutions fall off at the border (zero padding) where
    # interpolation clamps; through three upsamplings that reaches ~48 pixels
    m = 56
    torch.testing.assert_close(got[..., m:-m, m:-m], expected[..., m:-m, m:-m],
                               rtol=1e-4, atol=1e-4)


def test_bilinear_kernel_matches_the_closed_form():
    torch.testing.assert_close(
        bilinear_kernel(4), torch.outer(*[torch.tensor([0.25, 0.75, 0.75, 0.25])] * 2))
    k3 = torch.tensor([0.5, 1.0, 0.5])
    torch.testing.assert_close(bilinear_kernel(3), torch.outer(k3, k3))
    for k in range(1, 12):  # naive double loop over FCN's upsample_filt
        f = (k + 1) // 2
        c = f - 1 if k % 2 == 1 else f - 0.5
        naive = torch.tensor([[(1 - abs(i - c) / f) * (1 - abs(j - c) / f)
                               for j in range(k)] for i in range(k)])
        torch.testing.assert_close(bilinear_kernel(k), naive)
    w = bilinear_weight(3, 4)
    assert w[0, 1].abs().sum() == 0 and torch.equal(w[2, 2], bilinear_kernel(4))


@pytest.mark.parametrize("factor", [2, 4, 8, 32])
def test_bilinear_transposed_conv_is_interpolation_inside(factor):
    layer = bilinear_upsampling(2, factor)
    x = torch.randn(1, 2, 5, 6)
    with torch.no_grad():
        got = layer(x)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear",
                             align_corners=False)
    assert got.shape == (1, 2, 5 * factor, 6 * factor)
    m = factor  # the outermost half-cell differs (zeros vs clamping)
    torch.testing.assert_close(got[..., m:-m, m:-m], expected[..., m:-m, m:-m])
    assert not bilinear_upsampling(2, factor, trainable=False).weight.requires_grad
    with pytest.raises(ValueError, match="even"):
        bilinear_upsampling(2, 3)


def test_crop_like_keeps_the_top_left_and_checks_sizes():
    x = torch.arange(30.0).view(1, 1, 5, 6)
    assert torch.equal(crop_like(x, torch.zeros(1, 1, 4, 4)), x[..., :4, :4])
    with pytest.raises(ValueError, match="too small"):
        crop_like(x, torch.zeros(1, 1, 6, 6))


def test_fcn_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        FCN32s(3, width=0.0625)(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        FCN32s(0)


def test_command_line_loads_pretrained_weights(tmp_path, capsys):
    from utils.train.cli import main

    path = tmp_path / "vgg16.pth"
    torch.save(vgg_state_dict(0.0625, seed=5), path)
    argv = ["--model", "fcn8s", "--data", "shapes", "--out", str(tmp_path / "run"),
            "--pretrained", str(path), "--epochs", "1", "--train-size", "8",
            "--val-size", "2", "--image-size", "32", "--batch-size", "4",
            "--width", "0.0625", "--no-progress"]
    assert main(argv) == 0
    assert "fcn8s" in capsys.readouterr().out


def test_init_from_copies_the_shared_layers_stage_by_stage():
    """FCN-16s from FCN-32s, FCN-8s from FCN-16s: every shared tensor copied
    (checked one by one), the new skip left at zero, and before training the
    finer model predicts what the coarser one does."""
    from utils.models.fcn import init_from

    torch.manual_seed(2)
    f32 = FCN32s(4, width=0.0625).eval()
    with torch.no_grad():
        f32.score_fr.weight.normal_()
        f32.score_fr.bias.normal_()
    f16 = FCN16s(4, width=0.0625).eval()
    copied = init_from(f16, f32)
    theirs, mine = f32.state_dict(), f16.state_dict()
    expected = sorted(k for k in theirs if k in mine and k != "upscore.weight")
    assert sorted(copied) == expected and "score_fr.weight" in copied
    for key in expected:
        assert torch.equal(mine[key], theirs[key]), key
    assert f16.score_pool4.weight.abs().sum() == 0
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        same = (f16(x).argmax(1) == f32(x).argmax(1)).float().mean()
    assert same > 0.9

    with torch.no_grad():
        f16.score_pool4.weight.normal_()
    f8 = FCN8s(4, width=0.0625)
    copied8 = init_from(f8, f16)
    assert {"score_pool4.weight", "upscore2.weight"} <= set(copied8)
    assert torch.equal(f8.score_pool4.weight, f16.score_pool4.weight)
    assert f8.score_pool3.weight.abs().sum() == 0


def test_init_from_refuses_other_classes_or_widths():
    from utils.models.fcn import init_from

    f8 = FCN8s(4, width=0.0625)
    before = {k: v.clone() for k, v in f8.state_dict().items()}
    with pytest.raises(ValueError, match="same classes and width"):
        init_from(f8, FCN32s(5, width=0.0625))
    with pytest.raises(ValueError, match="same classes and width"):
        init_from(f8, FCN32s(4, width=0.125))
    with pytest.raises(TypeError, match="two FCNs"):
        init_from(f8, torch.nn.Conv2d(3, 4, 1))
    assert all(torch.equal(v, before[k]) for k, v in f8.state_dict().items())
