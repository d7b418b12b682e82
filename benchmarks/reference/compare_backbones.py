"""The course's backbones against torchvision's, same weights, same input.

Needs the reference environment (torchvision; not a course dependency)::

    /work/refvenv/bin/python benchmarks/reference/compare_backbones.py \\
        [--size 224] [--threads 2] [--repeats 7]

It builds torchvision's ``vgg16``, ``vgg16_bn``, ``resnet50`` and
``resnet101`` (random initialisation, batch norms given random statistics and
affine parameters so that they are not the identity; eval mode), copies each
state dict into the course's model with :func:`utils.models.load_torchvision`
and prints, per model and output stride (32, 16, 8 for the ResNets, with
torchvision's ``replace_stride_with_dilation``; and ResNet-50 with
``FrozenBatchNorm2d``, against torchvision's), the largest absolute
difference of every stage output, and that difference relative to the
reference's largest value.

It then times the forward pass of both, on the same input and thread count,
interleaved (A, B, B, A, ...) so that a change in the machine's load hits
both, and prints the medians of wall time and of process CPU time and their
ratio (course / torchvision). The timed work is the same in both: VGG16's
thirteen convolutions and five pools (torchvision's ``features``; the
course's fc6 is a 7x7 convolution over the whole map, not one matrix
product, so it is left out), and the whole ResNet with its classifier.
The course's code is imported from this checkout (added to ``sys.path``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torchvision.models import resnet50 as tv_resnet50
from torchvision.models import resnet101 as tv_resnet101
from torchvision.models import vgg16 as tv_vgg16
from torchvision.models import vgg16_bn as tv_vgg16_bn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from utils.models import FrozenBatchNorm2d, ResNet, load_torchvision  # noqa: E402
from utils.models.backbones.vgg import VGG16  # noqa: E402

DILATION = {32: [False, False, False], 16: [False, False, True],
            8: [False, True, True]}


def randomise_batch_norms(model: torch.nn.Module, seed: int) -> None:
    """Random running statistics and affine parameters in every batch norm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


def tv_vgg_stages(tv, x):
    """torchvision VGG16's stage outputs: before and after each max-pool, and
    fc7 (classifier.0, ReLU, classifier.3, ReLU; eval mode)."""
    out, n = {}, 1
    for layer in tv.features:
        if isinstance(layer, torch.nn.MaxPool2d):
            out[f"conv{n}"] = x
            x = layer(x)
            out[f"pool{n}"] = x
            n += 1
        else:
            x = layer(x)
    x = torch.flatten(tv.avgpool(x), 1)
    out["fc7"] = tv.classifier[:5](x)
    return out


def tv_resnet_stages(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    out = {}
    for n, layer in enumerate((tv.layer1, tv.layer2, tv.layer3, tv.layer4), 1):
        x = out[f"layer{n}"] = layer(x)
    out["fc"] = tv.fc(torch.flatten(tv.avgpool(x), 1))
    return out


def differences(ours: dict, ref: dict) -> list[tuple[str, float, float]]:
    rows = []
    for key, value in ref.items():
        got = ours[key]
        if key == "fc7" and got.ndim == 4:
            # the course's fc7 is a map; at 224x224 its centre cell's 7x7
            # window of pool5 is exactly the classifier's input
            got = got[:, :, got.shape[-2] // 2, got.shape[-1] // 2]
        if got.shape != value.shape:
            raise AssertionError(f"{key}: {list(got.shape)} vs {list(value.shape)}")
        diff = (got - value).abs().max().item()
        rows.append((key, diff, diff / value.abs().max().item()))
    return rows


def timed(fn, x) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare_speed(name, ours, ref, x, repeats) -> str:
    """Interleaved timings (A B B A ...), after one warm-up call each."""
    ours(x), ref(x)
    t = {"ours": [], "ref": []}
    for r in range(repeats):
        order = (("ours", ours), ("ref", ref)) if r % 2 == 0 else (
            ("ref", ref), ("ours", ours))
        for key, fn in order:
            t[key].append(timed(fn, x))
    wall = {k: statistics.median(w for w, _ in v) for k, v in t.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in t.items()}
    return (f"| {name} | {wall['ref'] * 1e3:.0f} | {wall['ours'] * 1e3:.0f} | "
            f"{wall['ours'] / wall['ref']:.3f} | {cpu['ref'] * 1e3:.0f} | "
            f"{cpu['ours'] * 1e3:.0f} | {cpu['ours'] / cpu['ref']:.3f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=224, help="input side (pixels)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=7, help="timed calls per model")
    p.add_argument("--no-timing", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.processor() or platform.machine()}, {args.threads} threads, "
          f"input 1x3x{args.size}x{args.size}\n")
    x = torch.randn(1, 3, args.size, args.size,
                    generator=torch.Generator().manual_seed(0))
    print("| model | output stride | stage | max abs diff | relative to max |")
    print("|---|---|---|---|---|")
    speed = []
    with torch.inference_mode():
        for name, build, bn in (("vgg16", tv_vgg16, False),
                                ("vgg16_bn", tv_vgg16_bn, True)):
            torch.manual_seed(1)
            tv = build().eval()
            randomise_batch_norms(tv, 2)
            ours = VGG16(batch_norm=bn).eval()
            load_torchvision(ours, tv.state_dict())
            for key, diff, rel in differences(ours(x), tv_vgg_stages(tv, x)):
                print(f"| {name} | 32 | {key} | {diff:.2e} | {rel:.2e} |")
            encoder = VGG16(batch_norm=bn, classifier=False).eval()
            load_torchvision(encoder, tv.state_dict())
            speed.append((f"{name} (13 convs + 5 pools)", encoder, tv.features))
        for depth, build in ((50, tv_resnet50), (101, tv_resnet101)):
            for stride in (32, 16, 8):
                torch.manual_seed(3)
                tv = build(replace_stride_with_dilation=DILATION[stride]).eval()
                randomise_batch_norms(tv, 4)
                ours = ResNet(depth, stride, classifier=True).eval()
                load_torchvision(ours, tv.state_dict())
                for key, diff, rel in differences(ours(x), tv_resnet_stages(tv, x)):
                    print(f"| resnet{depth} | {stride} | {key} | {diff:.2e} | "
                          f"{rel:.2e} |")
                if stride in (32, 8):
                    speed.append((f"resnet{depth}, output stride {stride}", ours, tv))
        # Mask R-CNN's backbone: frozen batch norms, loaded from the same file
        torch.manual_seed(5)
        source = tv_resnet50().eval()
        randomise_batch_norms(source, 6)
        tv = tv_resnet50(norm_layer=torchvision.ops.FrozenBatchNorm2d).eval()
        tv.load_state_dict(source.state_dict())
        ours = ResNet(50, classifier=True, norm_layer=FrozenBatchNorm2d).eval()
        load_torchvision(ours, source.state_dict())
        for key, diff, rel in differences(ours(x), tv_resnet_stages(tv, x)):
            print(f"| resnet50, FrozenBatchNorm2d | 32 | {key} | {diff:.2e} | "
                  f"{rel:.2e} |")
        if args.no_timing:
            return 0
        print(f"\nForward time, median of {args.repeats} interleaved calls (ms):\n")
        print("| model | torchvision wall | course wall | ratio | torchvision CPU "
              "| course CPU | ratio |")
        print("|---|---|---|---|---|---|---|")
        for name, ours, ref in speed:
            print(compare_speed(name, ours, ref, x, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
