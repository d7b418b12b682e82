"""Mask R-CNN on Shapes' instances: the README's results and chapter 08's table.

Trains the canonical Mask R-CNN (ResNet-50 FPN, width-scaled, from scratch)
with chapter 08's budget for the active profile (``COURSE_PROFILE``), as the
notebook does, evaluates box AP and mask AP on held-out Shapes images after
every epoch, and prints the final figures per class and as a Markdown table,
with wall and CPU time::

    OMP_NUM_THREADS=1 COURSE_PROFILE=cpu python -m benchmarks.maskrcnn_shapes \\
        --json benchmarks/results/maskrcnn_shapes_cpu.json [--out DIR]

``--json`` writes every figure (each epoch's losses and AP, the final AP per
class, times, the model's settings); chapter 08 shows its table from that
file. ``--out`` keeps ``checkpoint.pt`` and ``metrics.csv``. On a shared
machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from pathlib import Path

import torch

from benchmarks.record import header, plain, write_results
from utils import runtime
from utils.data.registry import DATASETS, build_dataset
from utils.models.detection.mask_rcnn import MaskRCNN
from utils.train import InstanceTask, TrainConfig, evaluate, fit


@torch.no_grad()
def stages(model, dataset, device) -> dict:
    """Where the trained network stands, stage by stage, on ``dataset``:

    - ``rpn_recall_50`` / ``_70``: objects with a proposal (of the test-time
      top ``rpn_post_nms_top_n_test``) at IoU >= 0.5 / 0.7;
    - ``gt_box_accuracy``: the box head's class (argmax, background included)
      for the true boxes used as RoIs; ``gt_box_background``: the share it
      calls background; ``gt_box_accuracy_things``: the argmax over the thing
      classes only (chance: one in the number of thing classes);
    - ``gt_mask_iou``: mean IoU of the mask head's 28x28 mask (the true
      class's, > 0.5) with the RoIAligned true mask, on the true boxes, and
      ``gt_mask_iou_over_50``: the share above 0.5.
    """
    from utils.models.detection.boxes import box_iou
    from utils.models.detection.mask_head import project_masks_on_boxes

    model.eval()
    heads, counts = model.roi_heads, dict.fromkeys(
        ("objects", "rec50", "rec70", "right", "background", "right_things"), 0)
    ious = []
    for image, target in dataset:
        target = {k: v.to(device) for k, v in target.items()}
        images, targets = model.transform([image.to(device)], [target])
        boxes, labels = targets[0]["boxes"], targets[0]["labels"]
        if not len(boxes):
            continue
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        best = box_iou(boxes, proposals[0]).max(dim=1).values
        logits, _ = heads.box_predictor(heads.box_head(
            heads.box_roi_pool(features, [boxes], images.image_sizes)))
        masks = heads.mask_predictor(heads.mask_head(
            heads.mask_roi_pool(features, [boxes], images.image_sizes)))
        M = masks.shape[-1]
        truth = project_masks_on_boxes(targets[0]["masks"], boxes,
                                       torch.arange(len(boxes), device=device), M)
        predicted = masks[torch.arange(len(boxes)), labels] > 0
        inter = (predicted & (truth >= 0.5)).flatten(1).sum(1)
        union = (predicted | (truth >= 0.5)).flatten(1).sum(1).clamp(min=1)
        ious += (inter / union).tolist()
        counts["objects"] += len(boxes)
        counts["rec50"] += int((best >= 0.5).sum())
        counts["rec70"] += int((best >= 0.7).sum())
        counts["right"] += int((logits.argmax(1) == labels).sum())
        counts["background"] += int((logits.argmax(1) == 0).sum())
        counts["right_things"] += int((logits[:, 1:].argmax(1) + 1 == labels).sum())
    n = max(1, counts["objects"])
    return {"objects": counts["objects"], "rpn_recall_50": counts["rec50"] / n,
            "rpn_recall_70": counts["rec70"] / n,
            "gt_box_accuracy": counts["right"] / n,
            "gt_box_background": counts["background"] / n,
            "gt_box_accuracy_things": counts["right_things"] / n,
            "gt_mask_iou": sum(ious) / max(1, len(ious)),
            "gt_mask_iou_over_50": sum(v > 0.5 for v in ious) / max(1, len(ious))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for checkpoint.pt and metrics.csv")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the results as JSON here")
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
    where = stages(model, val_set, rt.device)
    print(f"\nstage by stage, on the {where['objects']} held-out objects: RPN recall "
          f"{where['rpn_recall_50']:.3f} at IoU 0.5 ({where['rpn_recall_70']:.3f} at "
          f"0.7); true boxes classified right {where['gt_box_accuracy']:.3f} "
          f"(called background {where['gt_box_background']:.3f}; among the things "
          f"only {where['gt_box_accuracy_things']:.3f}); mask IoU on true boxes "
          f"{where['gt_mask_iou']:.3f} ({where['gt_mask_iou_over_50']:.3f} above 0.5)")
    print(f"\n{len(history)} epochs of {len(train_set)} images of {b.image_size} px, "
          f"{len(val_set)} validation images, width {b.width}, batch {b.batch_size}, "
          f"lr {b.lr}; wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min")
    if args.json is not None:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        write_results(args.json, {
            **header("benchmarks.maskrcnn_shapes", rt, b),
            "classes": list(classes), "params": params,
            "config": plain(dataclasses.asdict(model.config)),
            "train_wall_s": wall, "train_cpu_s": cpu, "peak_rss_mb": peak_mb,
            "history": plain(history), "final": plain(metrics),
            "stages": where})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

