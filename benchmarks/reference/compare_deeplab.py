"""The course's DeepLabV3 against torchvision's, same weights, same input.

Needs the reference environment (torchvision; not a course dependency)::

    /work/refvenv/bin/python benchmarks/reference/compare_deeplab.py \\
        [--size 224] [--threads 2] [--repeats 7] \\
        [--weights data/weights/deeplabv3_resnet50_coco-cd0a2569.pth]

It builds torchvision's ``deeplabv3_resnet50`` (21 classes, output stride 8,
with its auxiliary head), either from the published file (``--weights``) or
with random weights whose batch norms get random statistics and affine
parameters (so that none is the identity), copies the state dict into
``utils.models.deeplab.deeplabv3(21, output_stride=8)`` with
:func:`utils.models.load_torchvision` (the auxiliary head ignored), and
prints the largest absolute difference of the logits, also relative to the
logits' largest value, and whether the two give the same class at every
pixel. The course's model takes images in [0, 1] and normalises them itself;
torchvision's gets the same image normalised.

It then times the forward pass of both on the same input and thread count,
interleaved (A, B, B, A, ...) after one warm-up call each, and prints the
medians of wall time and process CPU time and their ratio (course /
torchvision). torchvision's forward also computes the auxiliary head, which
the course's model does not have; the script times torchvision's backbone
and ``classifier`` alone (its ``_SimpleSegmentationModel.forward`` without
``aux_classifier``) so that both do the same work.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.segmentation import deeplabv3_resnet50

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_backbones import randomise_batch_norms  # noqa: E402  (the same script's)

from utils.models import load_torchvision  # noqa: E402
from utils.models.deeplab import IMAGENET_MEAN, IMAGENET_STD, deeplabv3  # noqa: E402


def torchvision_logits(tv, x: torch.Tensor) -> torch.Tensor:
    """torchvision's forward without the auxiliary head (same work as ours)."""
    features = tv.backbone(x)
    y = tv.classifier(features["out"])
    return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def timed(fn, x) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=224, help="input side (pixels)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=7, help="timed calls per model")
    p.add_argument("--weights", type=Path, help="torchvision's deeplabv3 file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.processor() or platform.machine()}, {args.threads} threads, "
          f"input 1x3x{args.size}x{args.size}")
    torch.manual_seed(1)
    tv = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21,
                            aux_loss=True).eval()
    if args.weights:
        tv.load_state_dict(torch.load(args.weights, map_location="cpu",
                                      weights_only=True))
        print(f"weights: {args.weights}")
    else:
        randomise_batch_norms(tv, 2)
        print("weights: random (batch norms with random statistics)")
    ours = deeplabv3(21, output_stride=8).eval()
    load_torchvision(ours, tv.state_dict())

    image = torch.rand(1, 3, args.size, args.size,
                       generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    normalised = (image - mean) / std
    with torch.inference_mode():
        expected = tv(normalised)["out"]
        got = ours(image)
        diff = (got - expected).abs().max().item()
        scale = expected.abs().max().item()
        same = (got.argmax(1) == expected.argmax(1)).float().mean().item()
        print(f"logits {list(got.shape)}: max abs difference {diff:.3g} "
              f"({diff / scale:.3g} of the largest logit, {scale:.3g}); "
              f"same class at {100 * same:.4f} % of pixels")

        ours(image), torchvision_logits(tv, normalised)  # warm-up
        t = {"ours": [], "ref": []}
        for r in range(args.repeats):
            calls = [("ours", ours, image), ("ref", lambda z: torchvision_logits(tv, z),
                                             normalised)]
            for key, fn, x in (calls if r % 2 == 0 else calls[::-1]):
                t[key].append(timed(fn, x))
    wall = {k: statistics.median(w for w, _ in v) for k, v in t.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in t.items()}
    print("\n| model | tv wall ms | course wall ms | ratio | tv CPU ms | course CPU ms "
          "| ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| deeplabv3_resnet50, output stride 8 | {wall['ref'] * 1e3:.0f} | "
          f"{wall['ours'] * 1e3:.0f} | {wall['ours'] / wall['ref']:.3f} | "
          f"{cpu['ref'] * 1e3:.0f} | {cpu['ours'] * 1e3:.0f} | "
          f"{cpu['ours'] / cpu['ref']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
