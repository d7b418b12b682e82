"""The backbones (VGG16 with batch norm, indices and dilation; ResNet-50/101 at
output stride 32, 16, 8), FrozenBatchNorm2d and the one torchvision loader.

The references are written here, independently of utils.models: state dicts
with torchvision's key names and shapes (written out from torchvision's layout),
filled with random values, and functional networks that read those state dicts
layer by layer with F.conv2d / F.batch_norm / F.max_pool2d in torchvision's
order. The dilated ResNets are also checked against the undilated one: a
dilated stage evaluated on every grid position must, subsampled, give the
strided stage's output exactly (that is what "replace stride by dilation"
means, and it holds only with torchvision's ``previous_dilation`` rule).
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from torchvision_format import (
    CFG_D,
    RESNET_BLOCKS,
    bn,
    resnet_state_dict,
    vgg_state_dict,
)

from utils.models import (
    VGG16,
    FrozenBatchNorm2d,
    ResNet,
    load_torchvision,
    resnet50,
    resnet101,
)

# --------------------------------------------------------------- references

def vgg_reference(sd, x, batch_norm, output_stride):
    """torchvision's features (ceil-mode pools, as the course documents), with
    DeepLab/Dilation's change: at 16 the fifth pool is dropped and fc6 dilated
    by 2; at 8 the fourth and fifth pools are dropped, conv5_x dilated by 2 and
    fc6 by 4. fc6/fc7 are the Linear layers as "same" convolutions."""
    dropped = {32: set(), 16: {5}, 8: {4, 5}}[output_stride]
    conv5_dilation = 2 if output_stride == 8 else 1
    fc6_dilation = {32: 1, 16: 2, 8: 4}[output_stride]
    out, index, stage = {}, 0, 1
    for v in CFG_D:
        if v == "M":
            out[f"conv{stage}"] = x
            if stage not in dropped:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            out[f"pool{stage}"] = x
            stage, index = stage + 1, index + 1
            continue
        d = conv5_dilation if stage == 5 else 1
        x = F.conv2d(x, sd[f"features.{index}.weight"], sd[f"features.{index}.bias"],
                     padding=d, dilation=d)
        if batch_norm:
            x = bn(x, sd, f"features.{index + 1}")
        x = F.relu(x)
        index += 3 if batch_norm else 2
    w6 = sd["classifier.0.weight"]
    w6 = w6.view(w6.shape[0], -1, 7, 7)
    x = F.relu(F.conv2d(x, w6, sd["classifier.0.bias"], padding=3 * fc6_dilation,
                        dilation=fc6_dilation))
    w7 = sd["classifier.3.weight"]
    out["fc7"] = F.relu(F.conv2d(x, w7[:, :, None, None], sd["classifier.3.bias"]))
    return out


def resnet_reference(sd, x, depth, output_stride):
    """torchvision's ResNet forward over its state dict; dilation as
    ``replace_stride_with_dilation``: [F, F, T] at 16, [F, T, T] at 8."""
    replace = {32: [False] * 3, 16: [False, False, True],
               8: [False, True, True]}[output_stride]
    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    out, dilation = {}, 1
    for stage, blocks in enumerate(RESNET_BLOCKS[depth], start=1):
        stride, previous = (1 if stage == 1 else 2), dilation
        if stage > 1 and replace[stage - 2]:
            dilation, stride = dilation * 2, 1
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            s, d = (stride, previous) if b == 0 else (1, dilation)
            y = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
            y = F.relu(bn(F.conv2d(y, sd[f"{p}.conv2.weight"], stride=s, padding=d,
                                   dilation=d), sd, f"{p}.bn2"))
            y = bn(F.conv2d(y, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd,
                       f"{p}.downsample.1")
            x = F.relu(y + x)
        out[f"layer{stage}"] = x
    out["fc"] = F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])
    return out


def assert_maps_close(got, expected, rtol=1e-4):
    """Close relative to the map's largest value, and not all zeros."""
    scale = expected.abs().max().item()
    assert scale > 1e-3, "reference is (nearly) all zeros"
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * scale)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# ------------------------------------------------------------------ VGG16


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_vgg16_matches_the_functional_reference(batch_norm, output_stride):
    sd = vgg_state_dict(0.125, batch_norm, seed=output_stride)
    model = VGG16(0.125, batch_norm=batch_norm, output_stride=output_stride).eval()
    load_torchvision(model, sd)
    x = torch.randn(2, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        expected = vgg_reference(sd, x, batch_norm, output_stride)
    assert list(got) == [f"{k}{n}" for n in range(1, 6) for k in ("conv", "pool")
                         ] + ["fc7"]
    for key, value in expected.items():
        assert_maps_close(got[key], value)
    s = output_stride
    assert got["fc7"].shape[-2:] == (math.ceil(45 / s), math.ceil(70 / s))
    assert model.strides["fc7"] == s and model.strides["pool3"] == 8


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_vgg16_indices_locate_the_maxima(output_stride):
    model = VGG16(0.0625, batch_norm=True, classifier=False,
                  output_stride=output_stride).eval()
    with torch.no_grad():
        f = model(torch.randn(2, 3, 37, 51), return_indices=True)
    removed = {32: [], 16: [5], 8: [4, 5]}[output_stride]
    assert "fc7" not in f and model.fc_channels is None
    for n in range(1, 6):
        if n in removed:
            assert f"indices{n}" not in f
            assert f[f"pool{n}"] is f[f"conv{n}"]
            continue
        conv, pool, idx = f[f"conv{n}"], f[f"pool{n}"], f[f"indices{n}"]
        assert idx.dtype == torch.int64 and idx.shape == pool.shape
        h, w = conv.shape[-2:]
        assert pool.shape[-2:] == (math.ceil(h / 2), math.ceil(w / 2))
        # each index is a position in its own 2x2 window holding the maximum
        rows, cols = idx // w, idx % w
        i = torch.arange(pool.shape[-2]).view(-1, 1)
        j = torch.arange(pool.shape[-1]).view(1, -1)
        assert ((rows // 2 == i) & (cols // 2 == j)).all()
        gathered = conv.flatten(2).gather(2, idx.flatten(2)).view_as(pool)
        assert torch.equal(gathered, pool)
        window_max = F.max_pool2d(conv, 2, 2, ceil_mode=True)
        assert torch.equal(pool, window_max)
    with torch.no_grad():
        assert not any(k.startswith("indices") for k in model(torch.rand(1, 3, 8, 8)))


def test_vgg16_layout_names_and_channels():
    model = VGG16(0.5, batch_norm=True)
    names = [n for n, _ in model.conv1.named_children()]
    assert names == ["conv1_1", "conv1_1_bn", "relu1_1", "conv1_2", "conv1_2_bn",
                     "relu1_2"]
    assert [n for n, _ in model.conv5.named_children()][-3:] == [
        "conv5_3", "conv5_3_bn", "relu5_3"]
    assert model.channels == {**{f"pool{n}": c for n, c in
                                 enumerate((32, 64, 128, 256, 256), 1)},
                              **{f"conv{n}": c for n, c in
                                 enumerate((32, 64, 128, 256, 256), 1)}}
    assert model.fc_channels == 2048
    with torch.device("meta"):
        os8, os16 = VGG16(output_stride=8), VGG16(output_stride=16)
    assert isinstance(os8.pool4, torch.nn.Identity)
    assert isinstance(os8.pool5, torch.nn.Identity)
    assert isinstance(os16.pool5, torch.nn.Identity)
    assert isinstance(os16.pool4, torch.nn.MaxPool2d)
    assert os8.fc6.dilation == (4, 4) and os8.fc6.padding == (12, 12)
    assert os16.fc6.dilation == (2, 2) and os16.fc6.padding == (6, 6)
    assert os8.conv5.conv5_1.dilation == (2, 2)
    assert os16.conv5.conv5_1.dilation == (1, 1)
    with pytest.raises(ValueError, match="output_stride"):
        VGG16(output_stride=4)
    with pytest.raises(ValueError, match="3 input channels"):
        VGG16(0.0625)(torch.rand(1, 1, 8, 8))


def test_vgg16_parameter_counts_at_width_1():
    with torch.device("meta"):
        plain = VGG16()
        encoder_bn = VGG16(batch_norm=True, classifier=False)
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
             (256, 256), (256, 512), (512, 512), (512, 512), (512, 512),
             (512, 512), (512, 512)]  # fmt: skip
    conv_params = sum(9 * a * b + b for a, b in convs)
    bn_params = sum(2 * b for _, b in convs)
    count = sum(p.numel() for p in encoder_bn.parameters())
    assert count == conv_params + bn_params == 14_723_136
    # torchvision's vgg16 has 138,357,544 with the 1000-way classifier
    assert sum(p.numel() for p in plain.parameters()) == 138_357_544 - 4_097_000


def test_vgg16_bn_loads_a_file_with_and_without_num_batches_tracked(tmp_path):
    for num_batches in (True, False):
        sd = vgg_state_dict(0.0625, batch_norm=True, seed=3, num_batches=num_batches)
        path = tmp_path / f"vgg16_bn_{num_batches}.pth"
        torch.save(sd, path)
        model = VGG16(0.0625, batch_norm=True, classifier=False)
        load_torchvision(model, path)  # classifier.* ignored without fc6/fc7
        torch.testing.assert_close(model.conv2.conv2_2_bn.running_var,
                                   sd["features.11.running_var"])
        torch.testing.assert_close(model.conv5.conv5_3.weight, sd["features.40.weight"])
    with pytest.raises(ValueError, match="unexpected.*features.1.running_mean"):
        load_torchvision(VGG16(0.0625), vgg_state_dict(0.0625, batch_norm=True))
    with pytest.raises(ValueError, match="missing.*features.1.running_mean"):
        load_torchvision(VGG16(0.0625, batch_norm=True), vgg_state_dict(0.0625))


# ------------------------------------------------------------------ ResNet


@pytest.mark.parametrize("depth", [50, 101])
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_resnet_matches_the_functional_reference(depth, output_stride):
    sd = resnet_state_dict(depth, 0.125, seed=depth + output_stride)
    model = ResNet(depth, output_stride, width=0.125, classifier=True).eval()
    load_torchvision(model, sd)
    x = torch.randn(2, 3, 45, 70, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(x)
        expected = resnet_reference(sd, x, depth, output_stride)
    assert list(got) == ["layer1", "layer2", "layer3", "layer4", "fc"]
    for key, value in expected.items():
        assert_maps_close(got[key], value)
    for key, stride in model.strides.items():  # ceil(H / stride)
        assert got[key].shape[-2:] == (math.ceil(45 / stride), math.ceil(70 / stride))
        assert got[key].shape[1] == model.channels[key]
    assert model.strides["layer4"] == output_stride


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_stages_subsampled_are_the_strided_ones(output_stride):
    """Replacing a stride by dilation evaluates the same function on a finer
    grid: the strided network's map is every (32/os)-th value of the dilated
    one's, to float tolerance, borders and odd sizes included."""
    model32 = resnet50(width=0.125).eval()
    dilated = resnet50(width=0.125, output_stride=output_stride).eval()
    dilated.load_state_dict(model32.state_dict())
    x = torch.randn(1, 3, 75, 53, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = model32(x), dilated(x)
    for key, step in (("layer3", 16 // min(16, output_stride)),
                      ("layer4", 32 // output_stride)):
        assert_maps_close(b[key][..., ::step, ::step], a[key])
    assert torch.equal(a["layer2"], b["layer2"])


def test_resnet_full_width_names_shapes_and_parameter_counts():
    """torchvision's names and shapes at width 1, and its parameter counts
    (resnet50: 25,557,032; resnet101: 44,549,160 with the 1000-way fc)."""
    sd = resnet_state_dict(50, 1.0, seed=7)
    with torch.device("meta"):
        r50, r101 = resnet50(classifier=True), resnet101(classifier=True)
    ours = {k: v.shape for k, v in r50.state_dict().items()}
    assert list(ours) == list(sd)  # the same keys in the same order
    assert all(ours[k] == v.shape for k, v in sd.items())
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032
    assert sum(p.numel() for p in r101.parameters()) == 44_549_160
    assert r50.channels == {"layer1": 256, "layer2": 512, "layer3": 1024,
                            "layer4": 2048}
    model = resnet50(output_stride=8).eval()
    load_torchvision(model, sd)  # fc.* ignored without the classifier
    torch.testing.assert_close(model.layer4[2].bn3.running_mean,
                               sd["layer4.2.bn3.running_mean"])
    assert model.layer4[0].conv2.dilation == (2, 2)  # previous dilation
    assert model.layer4[1].conv2.dilation == (4, 4)
    assert model.layer3[0].conv2.stride == (1, 1)


def test_resnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        ResNet(34)
    with pytest.raises(ValueError, match="output_stride"):
        resnet50(output_stride=4)
    with pytest.raises(ValueError, match="3 input channels"):
        resnet50(width=0.0625)(torch.rand(1, 4, 32, 32))


# ------------------------------------------------------- FrozenBatchNorm2d


def test_frozen_batch_norm_is_batch_norm_at_evaluation_and_stays_frozen():
    torch.manual_seed(0)
    live = torch.nn.BatchNorm2d(5)
    live.train()
    live(torch.randn(8, 5, 4, 4) * 3 + 1)  # running statistics move
    with torch.no_grad():
        live.weight.uniform_(0.5, 2)
        live.bias.normal_()
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(live.state_dict())  # num_batches_tracked dropped
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean",
                                        "running_var"}
    assert list(frozen.parameters()) == []
    x = torch.randn(3, 5, 6, 7)
    frozen.train()  # training changes nothing for a frozen norm
    got = frozen(x)
    sd = live.state_dict()
    expected = (x - sd["running_mean"].view(1, -1, 1, 1)) / torch.sqrt(
        sd["running_var"].view(1, -1, 1, 1) + 1e-5
    ) * sd["weight"].view(1, -1, 1, 1) + sd["bias"].view(1, -1, 1, 1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(frozen.running_mean, sd["running_mean"])
    torch.testing.assert_close(got, live.eval()(x))


def test_resnet_with_frozen_batch_norm_loads_the_same_file():
    sd = resnet_state_dict(50, 0.0625, seed=9)
    a = resnet50(width=0.0625).eval()
    b = resnet50(width=0.0625, norm_layer=FrozenBatchNorm2d)
    load_torchvision(a, sd)
    load_torchvision(b, sd)  # with num_batches_tracked in the file
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert_maps_close(b.train()(x)["layer4"], a(x)["layer4"])
    # frozen: only the convolutions are left to train
    convs = sum(m.weight.numel() for m in a.modules()
                if isinstance(m, torch.nn.Conv2d))
    assert sum(p.numel() for p in b.parameters()) == convs


# ------------------------------------------------------------------ loader


class TinySegmenter(torch.nn.Module):
    """A chapter-07-like model: a ResNet ``backbone`` and a head, reading a file
    that nests the backbone under ``backbone.`` and carries an
    ``aux_classifier`` it does not use (torchvision's deeplabv3 layout)."""

    def __init__(self):
        super().__init__()
        self.backbone = resnet50(width=0.0625, output_stride=8)
        self.head = torch.nn.Conv2d(128, 3, 1)

    def torchvision_keys(self):
        keys = {f"backbone.{tv}": f"backbone.{ours}"
                for tv, ours in self.backbone.torchvision_keys().items()}
        keys.update({"classifier.4.weight": "head.weight",
                     "classifier.4.bias": "head.bias"})
        return keys

    def torchvision_ignored(self):
        return ("aux_classifier.",)


def test_a_model_with_a_backbone_delegates_with_a_prefix():
    backbone = resnet_state_dict(50, 0.0625, seed=11)
    del backbone["fc.weight"], backbone["fc.bias"]  # deeplabv3 files have no fc
    sd = {f"backbone.{k}": v for k, v in backbone.items()}
    sd["classifier.4.weight"] = torch.randn(3, 128, 1, 1)
    sd["classifier.4.bias"] = torch.randn(3)
    sd["aux_classifier.0.weight"] = torch.randn(4, 64, 3, 3)
    model = TinySegmenter()
    load_torchvision(model, sd)
    torch.testing.assert_close(model.head.weight, sd["classifier.4.weight"])
    torch.testing.assert_close(model.backbone.layer2[1].conv2.weight,
                               sd["backbone.layer2.1.conv2.weight"])


def test_loader_errors_list_everything_and_copy_nothing():
    good = resnet_state_dict(50, 0.0625, seed=12)
    bad = dict(good)
    del bad["layer3.1.bn2.running_var"], bad["conv1.weight"]
    bad["layer5.0.conv1.weight"] = torch.zeros(1)  # not a ResNet-50 key
    bad["layer1.0.conv2.weight"] = torch.zeros(4, 4, 1, 1)
    bad["layer2.0.bn1.bias"] = [0.0] * 8  # not a tensor
    bad["layer4.0.bn1.running_mean"] = bad["layer4.0.bn1.running_mean"].long()
    model = resnet50(width=0.0625)
    before = snapshot(model)
    with pytest.raises(ValueError) as err:
        load_torchvision(model, bad)
    message = str(err.value)
    # missing keys in the network's order, not alphabetically
    assert "missing keys (2): conv1.weight, layer3.1.bn2.running_var" in message
    assert "unexpected keys (1): layer5.0.conv1.weight" in message
    assert "layer1.0.conv2.weight: expected [4, 4, 3, 3], got [4, 4, 1, 1]" in message
    assert "layer2.0.bn1.bias: expected a tensor, got list" in message
    assert "layer4.0.bn1.running_mean: expected floating point" in message
    assert "width=0.0625; ImageNet weights need width=1.0" in message
    assert_unchanged(model, before)  # nothing copied
    assert "fc.weight" not in message  # the classifier is ignored, not unexpected
    # with the classifier, fc is needed
    with pytest.raises(ValueError, match=r"missing keys \(2\): fc.weight, fc.bias"):
        load_torchvision(ResNet(50, width=0.0625, classifier=True),
                         {k: v for k, v in good.items() if not k.startswith("fc.")})
    # a num_batches_tracked without its batch norm is unexpected
    with pytest.raises(ValueError, match="unexpected.*bn9.num_batches_tracked"):
        load_torchvision(model, {**good, "bn9.num_batches_tracked": torch.tensor(1)})
    # a file with neither fc nor any num_batches_tracked loads
    slim = {k: v for k, v in good.items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    load_torchvision(model, slim)
    torch.testing.assert_close(model.conv1.weight, good["conv1.weight"])


def test_loader_reads_files_and_refuses_bad_ones(tmp_path):
    model = resnet50(width=0.0625)
    with pytest.raises(FileNotFoundError, match="data_scripts.weights"):
        load_torchvision(model, tmp_path / "nothing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable torch weight file"):
        load_torchvision(model, tmp_path / "junk.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(ValueError, match="holds a Tensor, not a state dict"):
        load_torchvision(model, str(tmp_path / "tensor.pth"))
    with pytest.raises(TypeError, match="path or a state dict"):
        load_torchvision(model, 3)
    with pytest.raises(TypeError, match="torchvision_keys"):
        load_torchvision(torch.nn.Conv2d(1, 1, 1), {})

    class WrongMap(torch.nn.Module):
        def torchvision_keys(self):
            return {"a.weight": "nope.weight"}

    with pytest.raises(KeyError, match="nope.weight"):
        load_torchvision(WrongMap(), {"a.weight": torch.zeros(1)})
