"""FCN-32s, then FCN-16s, then FCN-8s on Shapes, trained stage-wise as in the
paper: the README's results table and chapter 03's ``cpu`` figure.

Trains the canonical models of chapter 03 with the chapter's budget for the
active profile (``COURSE_PROFILE``), exactly as the notebook does: FCN-32s for
``budget.epochs`` epochs from scratch, then FCN-16s started from the trained
FCN-32s (:func:`utils.models.fcn.init_from`) and FCN-8s from the trained
FCN-16s, each for :data:`FINE_EPOCHS` of the budget's epochs at
:data:`FINE_LR` of its learning rate. Prints a Markdown table of mIoU, boundary
IoU, parameters and training time, and with ``--out FILE`` writes every
epoch's history and the final per-class IoU as JSON (chapter 03 draws its
``cpu`` figure from ``benchmarks/results/fcn_shapes_cpu.json``)::

    OMP_NUM_THREADS=1 COURSE_PROFILE=cpu python -m benchmarks.fcn_shapes \\
        --out benchmarks/results/fcn_shapes_cpu.json

On a shared machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription (the
README figures were measured that way).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from utils import runtime
from utils.data import shapes
from utils.metrics import ConfusionMatrix, boundary_target
from utils.models import FCN8s, FCN16s, FCN32s
from utils.models.fcn import init_from
from utils.train import TrainConfig, fit, predict

# The finer stages fine-tune a trained network: a quarter of the epochs, a
# third of the learning rate (the paper lowers it for each stage too).
FINE_EPOCHS = 0.25
FINE_LR = 1 / 3
BAND = 3  # boundary IoU: pixels either side of a true edge


def stage_configs(b, progress: bool = False) -> dict[str, TrainConfig]:
    """The training of each stage under budget ``b``."""
    fine = TrainConfig.from_budget(b, epochs=max(1, round(b.epochs * FINE_EPOCHS)),
                                   lr=b.lr * FINE_LR, progress=progress)
    return {"FCN-32s": TrainConfig.from_budget(b, progress=progress),
            "FCN-16s": fine, "FCN-8s": fine}


def evaluate(model, val_set, device) -> dict:
    """Per-class IoU, mIoU and boundary IoU of ``model`` on ``val_set``."""
    cm, band = ConfusionMatrix(shapes.NUM_CLASSES), ConfusionMatrix(shapes.NUM_CLASSES)
    with torch.no_grad():
        for images, targets in torch.utils.data.DataLoader(val_set, batch_size=32):
            pred = predict(model, images, device)
            cm.update(pred, targets)
            band.update(pred, boundary_target(targets, BAND))
    full, edge = cm.compute(), band.compute()
    return {"miou": float(full["mean_iou"]), "boundary_iou": float(edge["mean_iou"]),
            "iou": [float(v) for v in full["iou"]],
            "boundary_class_iou": [float(v) for v in edge["iou"]]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", type=Path,
                        help="save each stage's weights in this folder")
    args = parser.parse_args(argv)
    rt = runtime.setup("03_fcn")
    b = rt.budget
    train_set, val_set = shapes.budget_splits(b)
    device_name = runtime.describe_device(rt.device)
    print(f"profile={rt.profile} device={device_name} budget={b}", flush=True)
    results, previous = {}, None
    start_all, cpu_all = time.perf_counter(), time.process_time()
    for (name, cls), (_, train_config) in zip(
            [("FCN-32s", FCN32s), ("FCN-16s", FCN16s), ("FCN-8s", FCN8s)],
            stage_configs(b).items()):
        torch.manual_seed(0)
        model = cls(shapes.NUM_CLASSES, width=b.width)
        if previous is not None:
            init_from(model, previous)
        start = time.perf_counter()
        history = fit(model, train_set, val_set, train_config,
                      num_classes=shapes.NUM_CLASSES, device=rt.device)
        seconds = time.perf_counter() - start
        results[name] = {**evaluate(model, val_set, rt.device),
                         "params": sum(p.numel() for p in model.parameters()),
                         "seconds": seconds, "epochs": train_config.epochs,
                         "lr": train_config.lr,
                         "history": [{k: v for k, v in row.items()
                                      if isinstance(v, (int, float))}
                                     for row in history]}
        previous = model
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.keep / f"{name}.pt")
        print(f"{name}: mIoU {results[name]['miou']:.3f} boundary IoU "
              f"{results[name]['boundary_iou']:.3f} ({seconds:.0f} s)", flush=True)
    wall, cpu = time.perf_counter() - start_all, time.process_time() - cpu_all
    print(f"\nwall time {wall:.0f} s, CPU time {cpu:.0f} s\n")
    print("| model | epochs | mIoU | boundary IoU (3 px) | parameters "
          "| training time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['epochs']} | {r['miou']:.3f} | {r['boundary_iou']:.3f} "
              f"| {r['params']:,} | {r['seconds']:.0f} s |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = ("OMP_NUM_THREADS=1 COURSE_PROFILE=cpu python -m "
                   "benchmarks.fcn_shapes --out " + str(args.out))
        args.out.write_text(json.dumps(
            {"profile": rt.profile, "budget": b.__dict__, "device": device_name,
             "command": command, "classes": list(shapes.CLASSES),
             "wall_seconds": wall, "cpu_seconds": cpu, "models": results},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
