"""FCN-8s, U-Net and SegNet on Shapes: the README's comparison table.

Trains the canonical models of chapters 03-05 with chapter 03's budget for
the active profile (``COURSE_PROFILE``), the budget FCN-8s was measured with,
as chapters 04 and 05 do, and prints a Markdown table of mIoU, boundary IoU,
parameters and training time (wall and CPU)::

    COURSE_PROFILE=cpu python -m benchmarks.semantic_shapes
    COURSE_PROFILE=cpu python -m benchmarks.semantic_shapes --models unet segnet

U-Net uses "same" padding here (the command line's ``unet``): Shapes' 64-pixel
images would otherwise be mirror-padded into 252-pixel tiles. On a shared
machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription.
"""

from __future__ import annotations

import argparse
import time

import torch

from utils import runtime
from utils.budgets import budget
from utils.data import shapes
from utils.metrics import ConfusionMatrix, boundary_target
from utils.models import MODELS
from utils.train import TrainConfig, fit, predict

BAND = 3  # boundary IoU: pixels within 3 px of a true edge
NAMES = {"fcn8s": "FCN-8s", "unet": "U-Net", "segnet": "SegNet"}


def evaluate(model, val_set, device) -> tuple[float, float]:
    """(mIoU, boundary IoU) over the whole validation set."""
    K = shapes.NUM_CLASSES
    cm, band = ConfusionMatrix(K), ConfusionMatrix(K)
    for images, targets in torch.utils.data.DataLoader(val_set, batch_size=32):
        pred = predict(model, images, device)
        cm.update(pred, targets)
        band.update(pred, boundary_target(targets, BAND))
    return cm.compute()["mean_iou"], band.compute()["mean_iou"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NAMES),
                        choices=sorted(NAMES))
    args = parser.parse_args(argv)
    rt = runtime.setup("04_unet")
    b = budget("03_fcn", rt.profile)
    config = shapes.ShapesConfig(image_size=b.image_size)
    train_set = shapes.Shapes("train", b.train_size, config)
    val_set = shapes.Shapes("val", b.val_size, config)
    train_config = TrainConfig.from_budget(b, progress=False)
    print(f"profile={rt.profile} threads={torch.get_num_threads()} budget={b}",
          flush=True)
    rows = []
    for key in args.models:
        torch.manual_seed(0)
        model = MODELS[key](shapes.NUM_CLASSES, width=b.width).to(rt.device)
        start, cpu = time.perf_counter(), time.process_time()
        fit(model, train_set, val_set, train_config, num_classes=shapes.NUM_CLASSES,
            device=rt.device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        miou, biou = evaluate(model, val_set, rt.device)
        params = sum(p.numel() for p in model.parameters())
        rows.append((NAMES[key], miou, biou, params, seconds, cpu))
        print(f"{NAMES[key]}: mIoU {miou:.3f} boundary IoU {biou:.3f} "
              f"({seconds:.0f} s, CPU {cpu:.0f} s)", flush=True)
    print("\n| model | mIoU | boundary IoU (3 px) | parameters | training time (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, miou, biou, params, seconds, cpu in rows:
        print(f"| {name} | {miou:.3f} | {biou:.3f} | {params:,} | {seconds:.0f} s "
              f"({cpu:.0f} s) |")


if __name__ == "__main__":
    main()
