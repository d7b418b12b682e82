"""FCN-8s, U-Net and SegNet on Shapes: the README's comparison table.

Trains the canonical models of chapters 03-05 with chapter 03's budget for
the active profile (``COURSE_PROFILE``), the budget FCN-8s was measured with,
as chapters 04 and 05 do, and prints a Markdown table of parameters, the
memory each model keeps for its decoder on one image, mIoU, boundary IoU, the
IoU of the two thinnest classes and training time (wall and CPU).
``segnet_mfb`` is SegNet trained with median-frequency class weights::

    COURSE_PROFILE=cpu python -m benchmarks.semantic_shapes
    COURSE_PROFILE=cpu python -m benchmarks.semantic_shapes --models unet --epochs 8
    COURSE_PROFILE=cpu python -m benchmarks.semantic_shapes --models unet --width 0.25
    COURSE_PROFILE=cpu python -m benchmarks.semantic_shapes --models fcn8s segnet \\
        --image-size 128

``--json PATH`` writes every row with its settings, the budget, device, threads,
and the wall and CPU time of the run; ``--update`` keeps the rows of other
settings already in that file (a row is keyed by model, width, epochs and image
size), so several runs make one file::

    COURSE_PROFILE=cpu python -m benchmarks.semantic_shapes --models fcn8s unet \
        --json benchmarks/results/semantic_shapes_cpu.json --update

U-Net uses "same" padding here (the command line's ``unet``): Shapes' 64-pixel
images would otherwise be mirror-padded into 252-pixel tiles. On a shared
machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.record import header, write_results
from utils import runtime
from utils.budgets import budget
from utils.data import shapes
from utils.losses import class_pixel_counts, cross_entropy, median_frequency_weights
from utils.metrics import ConfusionMatrix, boundary_target
from utils.models import MODELS
from utils.train import TrainConfig, fit, predict

BAND = 3  # boundary IoU: pixels within 3 px of a true edge
NAMES = {"fcn8s": "FCN-8s", "unet": "U-Net", "segnet": "SegNet",
         "segnet_mfb": "SegNet + MFB"}
THIN = ("ring", "cross")  # the classes with the fewest pixels


def evaluate(model, val_set, device) -> tuple[dict, float]:
    """(confusion-matrix metrics, boundary IoU) over the validation set."""
    K = shapes.NUM_CLASSES
    cm, band = ConfusionMatrix(K), ConfusionMatrix(K)
    for images, targets in torch.utils.data.DataLoader(val_set, batch_size=32):
        pred = predict(model, images, device)
        cm.update(pred, targets)
        band.update(pred, boundary_target(targets, BAND))
    return cm.compute(), band.compute()["mean_iou"]


def decoder_bytes(key: str, model, size: int) -> int:
    """Bytes each model keeps from its encoder for its decoder, one
    ``size x size`` image: SegNet's int64 pooling indices (one per pooled value),
    U-Net's four float32 maps before the pools, FCN-8s's float32 pool3 and
    pool4 (every pool rounds up)."""
    def side(stride):
        return -(-size // stride)

    if key.startswith("segnet"):
        channels = model.encoder.channels
        return sum(8 * channels[f"conv{n}"] * side(2**n) ** 2 for n in range(1, 6))
    if key == "unet":
        blocks = (model.down1, model.down2, model.down3, model.down4)
        return sum(4 * block.conv2.out_channels * side(2**n) ** 2
                   for n, block in enumerate(blocks))
    channels = model.backbone.channels
    return 4 * (channels["pool3"] * side(8) ** 2 + channels["pool4"] * side(16) ** 2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NAMES),
                        choices=sorted(NAMES))
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs instead of the budget's (to see the trend)")
    parser.add_argument("--width", type=float, default=None,
                        help="width instead of the budget's (to compare at equal "
                             "parameters)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side instead of the budget's (SegNet's pool5 "
                             "is 2x2 on 64-pixel images)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--update", action="store_true",
                        help="keep the rows of other settings in the --json file")
    args = parser.parse_args(argv)
    run_start, run_cpu = time.perf_counter(), time.process_time()
    rt = runtime.setup("05_segnet")
    changes = {k: v for k, v in (("epochs", args.epochs), ("width", args.width),
                                 ("image_size", args.image_size)) if v is not None}
    b = budget("03_fcn", rt.profile, **changes)
    K = shapes.NUM_CLASSES
    train_set, val_set = shapes.budget_splits(b)
    train_config = TrainConfig.from_budget(b, progress=False)
    print(f"profile={rt.profile} threads={torch.get_num_threads()} budget={b}",
          flush=True)
    rows, records = [], []
    for key in args.models:
        torch.manual_seed(0)
        model = MODELS[key.removesuffix("_mfb")](K, width=b.width).to(rt.device)
        loss_fn = None
        if key.endswith("_mfb"):
            targets = torch.stack([train_set[i][1] for i in range(len(train_set))])
            weights = median_frequency_weights(class_pixel_counts(targets, K))
            weights = weights.float().to(rt.device)

            def loss_fn(logits, target, weights=weights):
                return cross_entropy(logits, target, weight=weights)

        start, cpu = time.perf_counter(), time.process_time()
        fit(model, train_set, val_set, train_config, num_classes=K, device=rt.device,
            loss_fn=loss_fn)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        metrics, biou = evaluate(model, val_set, rt.device)
        thin = [metrics["iou"][shapes.CLASSES.index(c)] for c in THIN]
        params = sum(p.numel() for p in model.parameters())
        memory = decoder_bytes(key, model, b.image_size)
        rows.append((NAMES[key], params, memory, metrics["mean_iou"], biou, thin,
                     seconds, cpu))
        records.append({
            "key": row_key(key, b), "model": key, "name": NAMES[key],
            "width": b.width, "epochs": b.epochs, "image_size": b.image_size,
            "params": params, "decoder_bytes": memory,
            "miou": metrics["mean_iou"], "boundary_iou": biou,
            "iou": dict(zip(shapes.CLASSES, metrics["iou"])),
            "pixel_accuracy": metrics["pixel_accuracy"],
            "train_wall_s": seconds, "train_cpu_s": cpu,
            **header("benchmarks.semantic_shapes", rt, b)})
        print(f"{NAMES[key]}: mIoU {metrics['mean_iou']:.3f} boundary IoU {biou:.3f} "
              f"({seconds:.0f} s, CPU {cpu:.0f} s)", flush=True)
    print("\n| model | parameters | kept for the decoder | mIoU | boundary IoU "
          "(3 px) | IoU ring / cross | training time (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, params, memory, miou, biou, thin, seconds, cpu in rows:
        print(f"| {name} | {params:,} | {memory / 1024:.0f} kB | {miou:.3f} | "
              f"{biou:.3f} | {thin[0]:.3f} / {thin[1]:.3f} | {seconds:.0f} s "
              f"({cpu:.0f} s) |")
    if args.json:
        save(args.json, records, args.update, {
            "models": args.models, "epochs": args.epochs, "width": args.width,
            "image_size": args.image_size, "wall_s": time.perf_counter() - run_start,
            "cpu_s": time.process_time() - run_cpu})


def row_key(model: str, b) -> str:
    """The settings a row was measured with, as the results file's key."""
    return f"{model}/width={b.width:g}/epochs={b.epochs}/size={b.image_size}"


def save(path: Path, records: list, update: bool, run: dict) -> None:
    """Write ``records`` to ``path``; with ``update``, keep its rows of other
    settings. A lock on the folder keeps two runs that finish together from
    losing each other's rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        kept, runs = {}, []
        if update and path.exists():
            old = json.loads(path.read_text())
            kept, runs = {r["key"]: r for r in old["rows"]}, old["runs"]
        kept.update({r["key"]: r for r in records})
        write_results(path, {"benchmark": "benchmarks.semantic_shapes",
                             "rows": list(kept.values()), "runs": [*runs, run]})
    finally:
        os.close(folder)  # releases the lock
    print("\nwrote", path, f"({len(kept)} rows)")


if __name__ == "__main__":
    main()
