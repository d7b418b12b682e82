"""The control for chapter 03's stage-wise training: FCN-32s continued on the
finer stages' schedule instead of growing a skip.

FCN-16s trains two more epochs than FCN-32s (it starts from FCN-32s's weights),
so part of its gain could be the extra training. This script loads the FCN-32s
that ``benchmarks.fcn_shapes --keep DIR`` saved and trains it on exactly the
schedule FCN-16s gets (:func:`benchmarks.fcn_shapes.stage_configs`), then
prints its mIoU and boundary IoU::

    OMP_NUM_THREADS=1 COURSE_PROFILE=cpu python -m benchmarks.fcn_shapes \\
        --out benchmarks/results/fcn_shapes_cpu.json --keep runs/fcn_stages
    OMP_NUM_THREADS=1 COURSE_PROFILE=cpu python -m benchmarks.fcn32s_continued \\
        --weights runs/fcn_stages/FCN-32s.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.fcn_shapes import evaluate, stage_configs
from utils import runtime
from utils.data import shapes
from utils.models import FCN32s
from utils.train import fit


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True,
                        help="FCN-32s.pt saved by benchmarks.fcn_shapes --keep")
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        parser.error(f"--weights: no file {args.weights} (run benchmarks.fcn_shapes "
                     "with --keep first)")
    rt = runtime.setup("03_fcn")
    b = rt.budget
    train_set, val_set = shapes.budget_splits(b)
    torch.manual_seed(0)
    model = FCN32s(shapes.NUM_CLASSES, width=b.width)
    model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    before = evaluate(model, val_set, rt.device)
    start = time.perf_counter()
    fit(model, train_set, val_set, stage_configs(b)["FCN-16s"],
        num_classes=shapes.NUM_CLASSES, device=rt.device)
    after = evaluate(model, val_set, rt.device)
    print(f"FCN-32s: mIoU {before['miou']:.3f} -> {after['miou']:.3f}, boundary IoU "
          f"{before['boundary_iou']:.3f} -> {after['boundary_iou']:.3f} "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
