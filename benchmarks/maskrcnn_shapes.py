"""Mask R-CNN on Shapes' instances: the README's results and chapter 08's table.

Trains the canonical Mask R-CNN (ResNet-50 FPN, width-scaled, from scratch)
with chapter 08's budget for the active profile (``COURSE_PROFILE``), as the
notebook does, evaluates box AP and mask AP on held-out Shapes images after
every epoch, and prints the final figures per class and as a Markdown table,
with wall and CPU time::

    COURSE_PROFILE=cpu python -m benchmarks.maskrcnn_shapes [--out DIR]

``--out`` keeps ``checkpoint.pt`` and ``metrics.csv`` (one row per epoch). On
a shared machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from utils import runtime
from utils.data.registry import DATASETS, build_dataset
from utils.models.detection.mask_rcnn import MaskRCNN
from utils.train import InstanceTask, TrainConfig, evaluate, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for checkpoint.pt and metrics.csv")
    args = parser.parse_args()
    rt = runtime.setup("08_mask_rcnn")
    b = rt.budget
    classes = DATASETS["shapes"].instance_classes
    K = len(classes)
    train_set = build_dataset("shapes", "train", None, b.image_size, b.train_size,
                              train=True, task="instance")
    val_set = build_dataset("shapes", "val", None, b.image_size, b.val_size,
                            task="instance")
    device_name = runtime.describe_device(rt.device)
    print(f"profile={rt.profile} device={device_name} budget={b}", flush=True)
    torch.manual_seed(0)
    model = MaskRCNN.for_profile(rt.profile, b.image_size, K, width=b.width)
    params = sum(p.numel() for p in model.parameters())
    print(f"Mask R-CNN width {b.width}: {params:,} parameters", flush=True)
    config = TrainConfig.from_budget(b, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    history = fit(model, train_set, val_set, config, task=InstanceTask(K),
                  device=rt.device, out_dir=args.out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    task = InstanceTask(K)
    loader = torch.utils.data.DataLoader(val_set, batch_size=b.batch_size,
                                         collate_fn=task.collate)
    metrics = evaluate(model, loader, task, rt.device)
    print(f"\ntraining (with an evaluation per epoch): wall {wall:.0f} s, CPU "
          f"{cpu:.0f} s (process time, all threads)\n")
    print("| class | box AP | mask AP |")
    print("|---|---:|---:|")
    box_c, mask_c = metrics["box_ap_per_class"], metrics["mask_ap_per_class"]
    for c in range(1, K):
        print(f"| {classes[c]} | {box_c.get(c, float('nan')):.3f} | "
              f"{mask_c.get(c, float('nan')):.3f} |")
    print(f"| **mean (AP)** | **{metrics['box_ap']:.3f}** | "
          f"**{metrics['mask_ap']:.3f}** |")
    print(f"| **mean (AP50)** | **{metrics['box_ap50']:.3f}** | "
          f"**{metrics['mask_ap50']:.3f}** |")
    print(f"\n{len(history)} epochs of {len(train_set)} images of {b.image_size} px, "
          f"{len(val_set)} validation images, width {b.width}, batch {b.batch_size}, "
          f"lr {b.lr}; wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min")


if __name__ == "__main__":
    main()
