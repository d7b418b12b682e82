"""One Mask R-CNN setting on Shapes, trained briefly: how the README's table of
settings tried for chapter 08's ``cpu`` profile was made.

Builds chapter 08's model for a profile (:meth:`MaskRCNNConfig.for_profile`)
with any of its fields replaced (``--fields`` as JSON, lists for tuples),
trains it with ``fit`` on Shapes' instances and prints box AP and mask AP
after each epoch, and the wall and CPU time::

    OMP_NUM_THREADS=1 python -m benchmarks.maskrcnn_settings \\
        --fields '{"min_size": 64, "anchor_sizes": [[8], [16], [32], [64], [128]]}'

The defaults (2,048 images x 2 epochs, batch 8, width 0.25, lr 2e-3: 512
steps) are the table's; ``--train-size``, ``--epochs``, ``--batch-size``,
``--lr`` and ``--width`` change them.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from utils.budgets import Budget
from utils.data.registry import DATASETS, build_dataset
from utils.models.detection.mask_rcnn import MaskRCNN, MaskRCNNConfig
from utils.train import InstanceTask, TrainConfig, fit


def as_fields(text: str) -> dict:
    """``--fields``' JSON, with lists made tuples (the config's types)."""
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise SystemExit("error: --fields must be a JSON object of "
                         "MaskRCNNConfig fields")

    def tuples(v):
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v

    return {k: tuples(v) for k, v in fields.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    p.add_argument("--fields", default="{}", help="MaskRCNNConfig fields, JSON")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--val-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--lr", type=float, default=2e-3)
    a = p.parse_args()
    fields = as_fields(a.fields)
    K = len(DATASETS["shapes"].instance_classes)
    b = Budget(a.image_size, a.train_size, a.val_size, a.epochs, a.batch_size,
               a.width, a.lr)
    torch.manual_seed(0)
    model = MaskRCNN(config=MaskRCNNConfig.for_profile(
        a.profile, a.image_size, num_classes=K, width=a.width, **fields))
    print(f"{b}\nfields {fields}: {sum(q.numel() for q in model.parameters()):,} "
          "parameters", flush=True)
    train_set = build_dataset("shapes", "train", None, b.image_size, b.train_size,
                              train=True, task="instance")
    val_set = build_dataset("shapes", "val", None, b.image_size, b.val_size,
                            task="instance")
    wall, cpu = time.perf_counter(), time.process_time()
    fit(model, train_set, val_set, TrainConfig.from_budget(b, progress=False),
        task=InstanceTask(K), device=torch.device("cpu"))
    print(f"wall {time.perf_counter() - wall:.0f} s, CPU "
          f"{time.process_time() - cpu:.0f} s")


if __name__ == "__main__":
    main()
