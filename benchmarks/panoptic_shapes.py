"""Two panoptic systems on Shapes: the README's table and chapter 09's.

(a) two networks, fused: a Mask R-CNN (things) and a semantic FPN (all
classes), each trained on its own task, combined by the fusion rules;
(b) Panoptic FPN: one ResNet-50-FPN shared by Mask R-CNN and the semantic
branch, trained with the weighted joint loss. Every network gets chapter 09's
budget for the active profile (``COURSE_PROFILE``). Prints PQ, SQ and RQ for
all categories, things and stuff on held-out images, parameters, training
time (wall and CPU) and inference time per image, as a Markdown table::

    OMP_NUM_THREADS=1 COURSE_PROFILE=cpu python -m benchmarks.panoptic_shapes \\
        --out benchmarks/results/panoptic_shapes_cpu.json

``--out`` also writes every figure as JSON (per class, and each network's
metrics after every epoch); chapter 09 shows the table from that file.
``--train-size``, ``--val-size`` and ``--epochs`` override the budget (for a
shorter run; the table then says so).
On a shared machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from benchmarks.record import header, plain, write_results
from utils import runtime
from utils.data import shapes
from utils.data.registry import build_dataset
from utils.metrics import PanopticQuality
from utils.models.detection.mask_rcnn import MaskRCNN
from utils.models.panoptic import PanopticFPN, SemanticFPN, SeparatePanoptic
from utils.train import InstanceTask, PanopticTask, TrainConfig, fit

THINGS, STUFFS, K = shapes.THING_IDS, shapes.STUFF_IDS, shapes.NUM_CLASSES


def trained(model, task_name, task, b, device):
    """``model`` trained on Shapes' ``task_name`` targets: (wall, CPU) seconds
    and its history (one row of losses and metrics per epoch)."""
    train_set = build_dataset("shapes", "train", None, b.image_size, b.train_size,
                              train=True, task=task_name)
    val_set = build_dataset("shapes", "val", None, b.image_size, b.val_size,
                            task=task_name)
    config = TrainConfig.from_budget(b, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    kwargs = {"task": task} if task is not None else {"num_classes": K}
    history = fit(model, train_set, val_set, config, device=device, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, plain(history)


@torch.no_grad()
def panoptic_quality(model, b, device) -> tuple[dict, float]:
    """PQ/SQ/RQ on the held-out images, and seconds per image."""
    val_set = build_dataset("shapes", "val", None, b.image_size, b.val_size,
                            task="panoptic")
    pq = PanopticQuality(THINGS, STUFFS)
    model.eval()
    seconds = 0.0
    for image, target in val_set:
        start = time.perf_counter()
        out = model([image.to(device)])[0]
        seconds += time.perf_counter() - start
        pq.update(out["panoptic"].cpu(), target["panoptic"])
    return pq.compute(), seconds / max(1, len(val_set))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("train-size", "val-size", "epochs"):
        parser.add_argument(f"--{name}", type=int, default=None,
                            help="override the budget's value")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    rt = runtime.setup("09_panoptic")
    overrides = {k: v for k, v in (("train_size", args.train_size),
                                   ("val_size", args.val_size),
                                   ("epochs", args.epochs)) if v is not None}
    b = dataclasses.replace(rt.budget, **overrides)
    device_name = runtime.describe_device(rt.device)
    print(f"profile={rt.profile} device={device_name} budget={b}", flush=True)
    wall_all, cpu_all = time.perf_counter(), time.process_time()

    torch.manual_seed(0)
    joint = PanopticFPN.for_profile(rt.profile, b.image_size, K, width=b.width,
                                    thing_ids=THINGS)
    times_b = trained(joint, "panoptic", PanopticTask(THINGS, STUFFS), b, rt.device)
    torch.manual_seed(0)
    mask_rcnn = MaskRCNN.for_profile(rt.profile, b.image_size, len(THINGS) + 1,
                                     width=b.width)
    t_inst = trained(mask_rcnn, "instance", InstanceTask(len(THINGS) + 1), b,
                     rt.device)
    torch.manual_seed(0)
    semantic = SemanticFPN(K, width=b.width)
    t_sem = trained(semantic, "semantic", None, b, rt.device)
    separate = SeparatePanoptic(semantic, mask_rcnn, THINGS, STUFFS,
                                joint.config.fusion)
    times_a = (t_inst[0] + t_sem[0], t_inst[1] + t_sem[1], None)
    histories = {"panoptic_fpn": times_b[2], "mask_rcnn": t_inst[2],
                 "semantic_fpn": t_sem[2]}

    rows = []
    for name, model, times in (("Mask R-CNN + semantic FPN, fused", separate,
                                times_a), ("Panoptic FPN", joint, times_b)):
        result, per_image = panoptic_quality(model, b, rt.device)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, result, params, times, per_image))

    changed = f" with {overrides}" if overrides else ""
    print(f"\n{b.val_size} held-out images, profile {rt.profile}{changed}, "
          f"width {b.width}, {device_name}\n")
    print("| system | PQ | SQ | RQ | PQ th | SQ th | RQ th | PQ st | SQ st | RQ st "
          "| params | train wall s (CPU s) | ms / image |")
    print("|---|" + "---:|" * 12)
    for name, r, params, (wall, cpu, _), per_image in rows:
        cells = " | ".join(f"{100 * r[k + s]:.1f}" for s in ("", "_things", "_stuff")
                           for k in ("pq", "sq", "rq"))
        print(f"| {name} | {cells} | {params:,} | {wall:.0f} ({cpu:.0f}) | "
              f"{1000 * per_image:.0f} |")
    wall_all, cpu_all = time.perf_counter() - wall_all, time.process_time() - cpu_all
    print(f"\nwhole run: wall {wall_all:.0f} s, CPU {cpu_all:.0f} s")
    if args.out is not None:
        write_results(args.out, {
            **header("benchmarks.panoptic_shapes", rt, b), "overrides": overrides,
            "classes": list(shapes.CLASSES), "things": list(THINGS),
            "stuff": list(STUFFS), "wall_seconds": wall_all, "cpu_seconds": cpu_all,
            "systems": [{"system": name, "params": params, "train_wall_s": t[0],
                         "train_cpu_s": t[1], "ms_per_image": 1000 * per_image,
                         **plain(r)} for name, r, params, t, per_image in rows],
            "histories": histories})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
