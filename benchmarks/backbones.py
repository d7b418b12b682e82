"""Parameters and CPU forward time of the course's backbones at width 1.

    python -m benchmarks.backbones [--size 224] [--threads N] [--repeats 5]

Prints a Markdown table: parameters (all, and those ``load_torchvision`` fills
from torchvision's ImageNet file), the output maps' sizes, and the median wall
and process CPU time of one forward pass of a ``1 x 3 x size x size`` image in
eval mode (after one warm-up pass), for VGG16 (FCN's, with fc6/fc7 as
convolutions), the VGG16 and VGG16-BN encoders (13 convolutions, SegNet's),
VGG16 at output stride 8 (Dilation10's front end) and ResNet-50/101 at output
stride 32, 16 and 8. On a shared machine, run it alone and compare CPU times.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from utils.models import VGG16, ResNet

MODELS = {
    "VGG16 (fc6, fc7 as convolutions)": lambda: VGG16(),
    "VGG16 encoder": lambda: VGG16(classifier=False),
    "VGG16-BN encoder": lambda: VGG16(batch_norm=True, classifier=False),
    "VGG16, output stride 8": lambda: VGG16(output_stride=8),
    "ResNet-50 (with fc)": lambda: ResNet(50, classifier=True),
    "ResNet-50, output stride 16": lambda: ResNet(50, 16),
    "ResNet-50, output stride 8": lambda: ResNet(50, 8),
    "ResNet-101 (with fc)": lambda: ResNet(101, classifier=True),
    "ResNet-101, output stride 16": lambda: ResNet(101, 16),
    "ResNet-101, output stride 8": lambda: ResNet(101, 8),
}


def forward_times(model, x, repeats) -> tuple[float, float]:
    """Median wall and process CPU seconds of ``model(x)``."""
    model(x)  # warm-up: the first call allocates
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        model(x)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=224, help="input side (pixels)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=5, help="timed passes per model")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, input 1x3x{args.size}x{args.size}, eval mode\n")
    print("| backbone | parameters | from ImageNet | last map | wall (ms) "
          "| CPU (ms) |")
    print("|---|---|---|---|---|---|")
    x = torch.rand(1, 3, args.size, args.size)
    for name, build in MODELS.items():
        torch.manual_seed(0)
        model = build().eval()
        params = sum(p.numel() for p in model.parameters())
        state = model.state_dict()
        loaded = sum(state[k].numel() for k in model.torchvision_keys().values()
                     if not k.endswith(("running_mean", "running_var")))
        with torch.inference_mode():
            last = [t for t in model(x).values() if t.ndim == 4][-1]
            wall, cpu = forward_times(model, x, args.repeats)
        print(f"| {name} | {params:,} | {loaded:,} | {tuple(last.shape[1:])} | "
              f"{wall * 1e3:.0f} | {cpu * 1e3:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
