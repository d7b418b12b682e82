"""The checks under chapters 04 and 05's exercises: each passes an independent
correct answer (written here, not the canonical copy), refuses the canonical
copy, and refuses plausible wrong answers with a useful message. The models the
chapters give (not exercises) are pinned by the notebooks with
``assert_same_model``; here an independent U-Net and SegNet are pinned to the
canonical ones the same way, and wrong variants are refused."""

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.checks import ch04, ch05
from utils.checks.common import CheckFailed, assert_same_model
from utils.losses import median_frequency_weights, weight_map
from utils.models import segnet, unet
from utils.models.backbones.vgg import VGG16

# --- chapter 04 -------------------------------------------------------------


def my_crop_and_concat(skip, up):
    dh = skip.shape[-2] - up.shape[-2]
    dw = skip.shape[-1] - up.shape[-1]
    cropped = skip[..., dh // 2 : dh // 2 + up.shape[-2],
                   dw // 2 : dw // 2 + up.shape[-1]]
    return torch.cat((cropped, up), dim=1)


def test_crop_and_concat_check(capsys):
    ch04.check_crop_and_concat(my_crop_and_concat)
    assert capsys.readouterr().out.startswith("✓ crop_and_concat")
    with pytest.raises(CheckFailed, match="uses the reference|calls"):
        ch04.check_crop_and_concat(unet.crop_and_concat)

    def top_left(skip, up):
        return torch.cat([skip[..., : up.shape[-2], : up.shape[-1]], up], 1)

    with pytest.raises(CheckFailed, match="top-left corner") as err:
        ch04.check_crop_and_concat(top_left)
    assert "centres align" in str(err.value)

    def swapped(skip, up):
        return torch.cat([up, my_crop_and_concat(skip, up)[:, : skip.shape[1]]], 1)

    with pytest.raises(CheckFailed, match="wrong order"):
        ch04.check_crop_and_concat(swapped)

    def crops_up(skip, up):  # crops the wrong map: shapes cannot agree
        return torch.cat([skip, F.pad(up, (4, 4, 4, 4))], 1)

    with pytest.raises(CheckFailed, match="wrong shape"):
        ch04.check_crop_and_concat(crops_up)


class MyUNet(nn.Module):
    """An independent valid U-Net with the canonical parameter names."""

    def __init__(self, num_classes, in_channels=3, width=1.0):
        super().__init__()
        c = [max(1, round(n * width)) for n in (64, 128, 256, 512, 1024)]

        def block(a, b):
            return nn.Sequential(OrderedDict(conv1=nn.Conv2d(a, b, 3),
                                             relu1=nn.ReLU(),
                                             conv2=nn.Conv2d(b, b, 3),
                                             relu2=nn.ReLU()))

        ins = [in_channels] + c[:3]
        for k in range(4):
            setattr(self, f"down{k + 1}", block(ins[k], c[k]))
            setattr(self, f"upconv{k + 1}", nn.ConvTranspose2d(c[k + 1], c[k], 2, 2))
            setattr(self, f"up{k + 1}", block(2 * c[k], c[k]))
        self.bottom = block(c[3], c[4])
        self.classifier = nn.Conv2d(c[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for k in range(1, 5):
            x = getattr(self, f"down{k}")(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for k in range(4, 0, -1):
            x = getattr(self, f"upconv{k}")(x)
            x = getattr(self, f"up{k}")(my_crop_and_concat(skips[k - 1], x))
        return self.classifier(x)


def unet_tiles():
    g = torch.Generator().manual_seed(7)
    return [torch.rand(1, 3, h, w, generator=g) for h, w in ((188, 188), (204, 236))]


def test_independent_unet_is_the_canonical_one(capsys):
    torch.manual_seed(6)
    assert_same_model(MyUNet(2, 3, 1 / 16), unet.UNet(2, 3, 1 / 16), *unet_tiles(),
                      what="UNet")
    assert capsys.readouterr().out.startswith("✓ UNet is the canonical model")

    class NoSkip(MyUNet):  # drops the copied map: the layers do not fit
        def __init__(self, *args):
            super().__init__(*args)
            self.up1 = nn.Sequential()

    with pytest.raises(CheckFailed, match="layers differ"):
        assert_same_model(NoSkip(2, 3, 1 / 16), unet.UNet(2, 3, 1 / 16),
                          *unet_tiles(), what="UNet")

    class ZeroPadded(MyUNet):  # "same" convolutions: wrong output size
        def __init__(self, *args):
            super().__init__(*args)
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                    m.padding = (1, 1)

    with pytest.raises(CheckFailed, match="differs from the canonical"):
        assert_same_model(ZeroPadded(2, 3, 1 / 16), unet.UNet(2, 3, 1 / 16),
                          *unet_tiles(), what="UNet")


def my_distances(instances):
    """(cells, H, W): each pixel's distance to each cell, sorted over cells."""
    H, W = instances.shape
    ids = [k for k in instances.unique().tolist() if k > 0]
    grid = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W),
                                      indexing="ij"), -1).reshape(-1, 2).float()
    dist = [torch.cdist(grid, (instances == k).nonzero().float()).min(1).values
            for k in ids]
    return torch.stack(dist).sort(0).values.reshape(-1, H, W)


def my_border_weights(instances, w0, sigma):
    if len(instances.unique()) < 3:  # background and fewer than two cells
        return torch.zeros(instances.shape)
    d = my_distances(instances)
    w = w0 * torch.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return torch.where(instances > 0, 0.0, w)


def test_border_weights_check(capsys):
    ch04.check_border_weights(my_border_weights)
    assert capsys.readouterr().out.startswith("✓ border_weights")
    with pytest.raises(CheckFailed, match="calls"):
        ch04.check_border_weights(weight_map.border_weights)

    def uses_the_canonical_distances(instances, w0, sigma):
        d1, d2 = weight_map.instance_distances(instances, 2)
        w = w0 * torch.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        return torch.where(instances > 0, 0.0, w)

    with pytest.raises(CheckFailed, match="calls"):
        ch04.check_border_weights(uses_the_canonical_distances)

    def everywhere(instances, w0, sigma):
        if len(instances.unique()) < 3:
            return torch.zeros(instances.shape)
        d = my_distances(instances)
        return w0 * torch.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))

    with pytest.raises(CheckFailed, match="cells' own pixels") as err:
        ch04.check_border_weights(everywhere)
    assert "instances > 0" in str(err.value)

    def nearest_only(instances, w0, sigma):
        d = my_distances(instances)
        w = w0 * torch.exp(-(d[0] ** 2) / (2 * sigma**2))
        return torch.where(instances > 0, 0.0, w)

    with pytest.raises(CheckFailed, match="only the nearest cell"):
        ch04.check_border_weights(nearest_only)

    def no_two(instances, w0, sigma):  # forgets the 2 in 2 sigma^2
        return my_border_weights(instances, w0, sigma / math.sqrt(2))

    with pytest.raises(CheckFailed, match="values differ"):
        ch04.check_border_weights(no_two)


def reflect_index(i, n):
    period = 2 * (n - 1)
    i = i % period
    return i if i < n else period - i


def my_overlap_tile(net, image, tile, step):
    B, C, H, W = image.shape
    m = 92
    n_rows = max(1, math.ceil((H - tile) / step) + 1)
    n_cols = max(1, math.ceil((W - tile) / step) + 1)
    Ht, Wt = (n_rows - 1) * step + tile, (n_cols - 1) * step + tile
    rows = torch.tensor([reflect_index(i, H) for i in range(-m, Ht + m)])
    cols = torch.tensor([reflect_index(j, W) for j in range(-m, Wt + m)])
    padded = image[:, :, rows][:, :, :, cols]
    out = torch.zeros(B, 2, Ht, Wt)
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = r * step, c * step
            out[:, :, y : y + tile, x : x + tile] = net(
                padded[:, :, y : y + tile + 2 * m, x : x + tile + 2 * m])
    return out[:, :, :H, :W]


def test_overlap_tile_check(capsys):
    ch04.check_overlap_tile(my_overlap_tile)
    assert capsys.readouterr().out.startswith("✓ overlap_tile")
    with pytest.raises(CheckFailed, match="calls"):
        ch04.check_overlap_tile(unet.overlap_tile_predict)

    def zero_padded(net, image, tile, step):
        return ch04._zero_padded_tiles(net, image, tile, step)

    with pytest.raises(CheckFailed, match="padded with zeros") as err:
        ch04.check_overlap_tile(zero_padded)
    assert "mirror" in str(err.value)

    def uncropped(net, image, tile, step):
        H, W = image.shape[-2:]
        big = torch.nn.functional.pad(image, (0, tile, 0, tile))
        return my_overlap_tile(net, big, tile, step)[..., : H + 1, : W + 1]

    with pytest.raises(CheckFailed, match="wrong shape"):
        ch04.check_overlap_tile(uncropped)

    def not_done(*args):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not done yet"):
        ch04.check_overlap_tile(not_done)


# --- chapter 05 -------------------------------------------------------------


def my_unpool(x, indices, output_size):
    B, C, h, w = x.shape
    H, W = output_size
    out = torch.zeros(B * C, H * W)
    rows = torch.arange(B * C)[:, None].expand(-1, h * w)
    out[rows, indices.reshape(B * C, -1)] = x.reshape(B * C, -1)
    return out.view(B, C, H, W)


def test_max_unpool_check(capsys):
    ch05.check_max_unpool(my_unpool)
    assert capsys.readouterr().out.startswith("✓ max_unpool")
    with pytest.raises(CheckFailed, match="calls"):
        ch05.check_max_unpool(segnet.max_unpool)

    def with_torch(x, indices, output_size):
        return F.max_unpool2d(x, indices, 2, output_size=output_size)

    with pytest.raises(CheckFailed, match="calls"):
        ch05.check_max_unpool(with_torch)

    def with_module(x, indices, output_size):
        return nn.MaxUnpool2d(2)(x, indices, output_size=output_size)

    with pytest.raises(CheckFailed, match="calls"):
        ch05.check_max_unpool(with_module)

    def twice_the_pooled_size(x, indices, output_size):
        return my_unpool(x, indices, (2 * x.shape[-2], 2 * x.shape[-1]))

    with pytest.raises(CheckFailed, match="wrong size") as err:
        ch05.check_max_unpool(twice_the_pooled_size)
    assert "output_size" in str(err.value)

    def top_left(x, indices, output_size):
        out = torch.zeros(*x.shape[:2], *output_size)
        h, w = (output_size[0] + 1) // 2, (output_size[1] + 1) // 2
        out[..., ::2, ::2] = x[..., :h, :w]
        return out

    with pytest.raises(CheckFailed, match="top-left corner"):
        ch05.check_max_unpool(top_left)


def my_median_frequency(counts):
    counts = counts.double()
    pixels = counts.sum(1)
    weights = torch.zeros(counts.shape[1], dtype=torch.float64)
    freqs = {}
    for c in range(counts.shape[1]):
        where = counts[:, c] > 0
        if where.any():
            freqs[c] = counts[where, c].sum() / pixels[where].sum()
    values = sorted(freqs.values())
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    for c, f in freqs.items():
        weights[c] = median / f
    return weights


def test_median_frequency_check(capsys):
    ch05.check_median_frequency(my_median_frequency)
    assert capsys.readouterr().out.startswith("✓ median_frequency_weights")
    with pytest.raises(CheckFailed, match="calls"):
        ch05.check_median_frequency(median_frequency_weights)

    def all_pixels(counts):
        f = counts.sum(0).double() / counts.sum()
        present = f > 0
        return torch.where(present, f[present].quantile(0.5) / f, 0.0)

    with pytest.raises(CheckFailed, match="all images' pixels"):
        ch05.check_median_frequency(all_pixels)

    def lower_median(counts):
        w = my_median_frequency(counts)
        f = torch.where(w > 0, 1 / w, 0.0)  # f / median
        present = w > 0
        n = int(present.sum())
        if n % 2:
            return w
        ratio = f[present].sort().values  # f_c / true median
        lower = ratio[n // 2 - 1]  # the lower middle, in the same units
        return torch.where(present, lower / f, 0.0)

    with pytest.raises(CheckFailed, match="lower of the two middle"):
        ch05.check_median_frequency(lower_median)

    def divides_by_zero(counts):
        return torch.nan_to_num(my_median_frequency(counts), nan=0.0) / (
            counts.sum(0) > 0).double()

    with pytest.raises(CheckFailed, match="inf or NaN"):
        ch05.check_median_frequency(divides_by_zero)


class MySegNet(nn.Module):
    """An independent SegNet with the canonical parameter names."""

    def __init__(self, num_classes, width=1.0, upsample=my_unpool):
        super().__init__()
        self.upsample = upsample
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(
            1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1), persistent=False)
        self.encoder = VGG16(width, batch_norm=True, classifier=False)
        plan = {5: [512, 512, 512], 4: [512, 512, 256], 3: [256, 256, 128],
                2: [128, 64], 1: [64]}
        for n, outs in plan.items():
            layers, c = OrderedDict(), self.encoder.channels[f"conv{n}"]
            for k, cout in enumerate(outs, start=1):
                cout = max(1, round(cout * width))
                layers[f"conv{k}"] = nn.Conv2d(c, cout, 3, padding=1)
                layers[f"bn{k}"] = nn.BatchNorm2d(cout)
                layers[f"relu{k}"] = nn.ReLU()
                c = cout
            if n == 1:
                layers["classifier"] = nn.Conv2d(c, num_classes, 3, padding=1)
            setattr(self, f"decoder{n}", nn.Sequential(layers))

    def forward(self, x):
        f = self.encoder((x - self.mean) / self.std, return_indices=True)
        y = f["pool5"]
        for n in (5, 4, 3, 2, 1):
            y = self.upsample(y, f[f"indices{n}"], tuple(f[f"conv{n}"].shape[-2:]))
            y = getattr(self, f"decoder{n}")(y)
        return y


def segnet_with_statistics(width=1 / 16):
    """The canonical SegNet with batch-norm statistics that are not the identity."""
    torch.manual_seed(12)
    ref = segnet.SegNet(4, width=width)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return ref


def segnet_images():
    g = torch.Generator().manual_seed(13)
    return [torch.rand(2, 3, h, w, generator=g) for h, w in ((64, 96), (45, 71))]


def test_independent_segnet_is_the_canonical_one(capsys):
    assert_same_model(MySegNet(4, 1 / 16), segnet_with_statistics(),
                      *segnet_images(), what="SegNet", atol=1e-4, rtol=1e-4)
    assert capsys.readouterr().out.startswith("✓ SegNet is the canonical model")

    def nearest(y, indices, size):  # indices thrown away
        return F.interpolate(y, size=size, mode="nearest")

    with pytest.raises(CheckFailed, match="differs from the canonical"):
        assert_same_model(MySegNet(4, 1 / 16, upsample=nearest),
                          segnet_with_statistics(), *segnet_images(),
                          what="SegNet", atol=1e-4, rtol=1e-4)

    class NoNorm(MySegNet):  # the decoder without batch norm
        def __init__(self, *args):
            super().__init__(*args)
            for n in range(1, 6):
                kept = [(k, m) for k, m in getattr(self, f"decoder{n}").named_children()
                        if not k.startswith("bn")]
                setattr(self, f"decoder{n}", nn.Sequential(OrderedDict(kept)))

    with pytest.raises(CheckFailed, match="layers differ"):
        assert_same_model(NoNorm(4, 1 / 16), segnet_with_statistics(),
                          *segnet_images(), what="SegNet")
