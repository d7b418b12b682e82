"""U-Net on Cells with and without the border weights: the README's table.

Trains the valid U-Net of chapter 04 (mirror-padded 68x68 tiles, elastic
deformation) twice with the chapter's budget for the active profile
(``COURSE_PROFILE``), once with the class-balanced loss alone (``w0 = 0``) and
once with the paper's border term (``w0 = 10``, ``sigma = 5``), exactly as the
notebook does, and counts on held-out images how many touching cells the
connected components of the prediction keep apart::

    COURSE_PROFILE=cpu python -m benchmarks.unet_cells

``--json PATH`` also writes the counts of both rows, the settings, the budget,
device, threads, and the wall and CPU time, for chapter 04 to read back::

    COURSE_PROFILE=cpu python -m benchmarks.unet_cells \
        --json benchmarks/results/unet_cells_cpu.json

On a shared machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.record import header, write_results
from utils import runtime
from utils.data.cells import Cells, CellsConfig
from utils.data.transforms import Compose, ElasticDeformation
from utils.losses import pixel_weighted_cross_entropy
from utils.losses.weight_map import SIGMA, unet_weight_map, with_separation_target
from utils.metrics.instances import (
    connected_components,
    grow_labels,
    instance_scores,
    remove_small,
)
from utils.models.unet import MirrorPadded, UNet
from utils.train import TrainConfig, fit, predict

ELASTIC_SIGMA = 3.0  # pixels on 68-pixel images (the paper: 10 on 512)
FIT_VAL = 8  # validation images fit reports each epoch (the counts use all)
LOSSES = [("class balance only (w0 = 0)", 0.0), ("with border weights (w0 = 10)", 10.0)]



def weighted_loss(w0: float):
    """Pixel-weighted cross-entropy with U-Net's weight map for ``w0``."""

    def loss(logits, target):
        return pixel_weighted_cross_entropy(logits, target,
                                            unet_weight_map(target, w0=w0))

    return loss


def count_cells(model, held_out, device) -> dict:
    """Connected components of the predicted cells, specks removed and grown
    back by the one-pixel separation border, against the true cells."""
    images = torch.stack([held_out[i][0] for i in range(len(held_out))])
    panoptic = torch.stack([held_out[i][1] for i in range(len(held_out))])
    pred = predict(model, images, device)
    objects = grow_labels(remove_small(connected_components(pred == 1),
                                       held_out.config.min_visible))
    return instance_scores(objects, panoptic[..., 1], panoptic[..., 0] == 255)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    run_start, run_cpu = time.perf_counter(), time.process_time()
    rt = runtime.setup("04_unet")
    b = rt.budget
    config = CellsConfig(image_size=b.image_size)
    augment = Compose([ElasticDeformation(3, ELASTIC_SIGMA), with_separation_target])
    train_set = Cells("train", b.train_size, config, task="panoptic",
                      transform=augment)
    val_set = Cells("val", FIT_VAL, config, task="panoptic",
                    transform=with_separation_target)
    held_out = Cells("test", b.val_size, config, task="panoptic")
    train_config = TrainConfig.from_budget(b, progress=False)
    print(f"profile={rt.profile} threads={torch.get_num_threads()} budget={b}",
          flush=True)
    rows = []
    for name, w0 in LOSSES:
        torch.manual_seed(0)
        model = MirrorPadded(UNet(2, width=b.width))
        start, cpu = time.perf_counter(), time.process_time()
        fit(model, train_set, val_set, train_config, num_classes=2,
            device=rt.device, loss_fn=weighted_loss(w0))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        r = count_cells(model, held_out, rt.device)
        rows.append((name, w0, r, seconds, cpu))
        print(f"{name}: {r['num_true']} cells, merged {r['merged']}, split "
              f"{r['split']}, F1 {r['f1']:.3f} ({seconds:.0f} s, CPU {cpu:.0f} s)",
              flush=True)
    print("\n| loss | true cells | merged | split | precision | recall | "
          "F1 (IoU > 0.5) | training time (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, r, seconds, cpu in rows:
        print(f"| {name} | {r['num_true']} | {r['merged']} | {r['split']} | "
              f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
              f"{seconds:.0f} s ({cpu:.0f} s) |")
    if args.json:
        write_results(args.json, {
            **header("benchmarks.unet_cells", rt, b),
            "settings": {"padding": "valid", "tile": "mirror-padded",
                         "elastic_grid": 3, "elastic_sigma_px": ELASTIC_SIGMA,
                         "weight_sigma_px": SIGMA,
                         "min_visible": held_out.config.min_visible,
                         "grow_px": 1, "iou_threshold": 0.5,
                         "held_out_images": len(held_out)},
            "rows": [{"name": name, "w0": w0, **r, "train_wall_s": seconds,
                      "train_cpu_s": cpu} for name, w0, r, seconds, cpu in rows],
            "wall_s": time.perf_counter() - run_start,
            "cpu_s": time.process_time() - run_cpu})
        print("\nwrote", args.json)


if __name__ == "__main__":
    main()
