"""Semantic models side by side: cost and accuracy under one budget (chapter 07).

:func:`compare` trains each registered model (:data:`utils.models.MODELS`)
with the same budget, data and seed, and measures, for each:

- ``params``: trainable and frozen parameters;
- ``flops``: FLOPs of one forward pass on one image of the budget's size,
  counted by torch (:func:`utils.flops.count_flops`, 2 per multiply-add);
- ``images_per_s``: inference throughput on the CPU (eval mode, batches of the
  budget's size, median of a few timed calls; wall time, so it depends on the
  machine and its load) and ``cpu_s_per_image``, the process CPU time;
- ``activation_mb``: the activations autograd keeps for the backward pass of
  one training batch (each storage once, parameters excluded): with 16 bytes
  per parameter for weights, gradients and AdamW's two moments, what a
  training step needs at its peak, apart from temporaries. It depends on the
  model and the batch only, not on the machine;
- ``miou`` and ``boundary_iou`` (3 px band) on the validation set after
  training, and the training time (wall and CPU).

``benchmarks/semantic_models.py`` is the command line; it also measures the
peak memory of a training step in a fresh process.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from utils.flops import count_flops
from utils.models import MODELS
from utils.train import TrainConfig, fit

# The semantic models of chapters 00-07, in the order they were built, and the
# names the tables give them.
NAMES = {
    "tiny_fcn": "TinyFCN",
    "fcn8s": "FCN-8s",
    "unet": "U-Net",
    "segnet": "SegNet",
    "dilation_front": "Dilation10 front end",
    "dilation10": "Dilation10",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3+",
}


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def activation_bytes(model: nn.Module, images: torch.Tensor,
                     targets: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in one training
    forward pass of ``model`` on ``images`` (each storage counted once;
    parameters, which exist anyway, excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(images), targets, ignore_index=255)
    del loss
    return sum(saved.values())


@torch.no_grad()
def throughput(model: nn.Module, images: torch.Tensor, repeats: int = 3
               ) -> tuple[float, float]:
    """(images per second by wall time, CPU seconds per image) of ``model``'s
    inference on ``images``: the median of ``repeats`` calls after a warm-up."""
    model.eval()
    model(images)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        model(images)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    n = len(images)
    return n / statistics.median(walls), statistics.median(cpus) / n


def measure(name: str, budget, train_set, val_set, device, num_classes: int,
            progress: bool = False, log=print, seed: int = 0) -> tuple[dict, nn.Module]:
    """Train model ``name`` with ``budget`` and measure it; returns the row and
    the trained model."""
    torch.manual_seed(seed)
    model = MODELS[name](num_classes, width=budget.width).to(device)
    size = budget.image_size
    row = {"key": name, "model": NAMES.get(name, name), "params": parameters(model)}
    model.eval()
    row["flops"] = count_flops(model, torch.zeros(1, 3, size, size, device=device))
    images = torch.stack([train_set[i][0] for i in range(budget.batch_size)])
    targets = torch.stack([train_set[i][1] for i in range(budget.batch_size)])
    row["activation_mb"] = activation_bytes(model, images.to(device),
                                            targets.to(device)) / 2**20
    config = TrainConfig.from_budget(budget, progress=progress)
    wall, cpu = time.perf_counter(), time.process_time()
    history = fit(model, train_set, val_set, config, num_classes=num_classes,
                  device=device, log=log)
    row["train_s"] = time.perf_counter() - wall
    row["train_cpu_s"] = time.process_time() - cpu
    # fit evaluates after every epoch: the last row is the trained model's
    row["miou"] = history[-1]["miou"]
    row["boundary_iou"] = history[-1]["boundary_iou"]
    row["images_per_s"], row["cpu_s_per_image"] = throughput(model.cpu(), images)
    model.to(device)
    return row, model


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| model | parameters | GFLOPs / image | images/s (CPU) | "
             "activations (MB) | mIoU | boundary IoU |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['flops'] / 1e9:.3f} | "
                     f"{r['images_per_s']:.0f} | {r['activation_mb']:.1f} | "
                     f"{r['miou']:.3f} | {r['boundary_iou']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], title: str = ""):
    """Boundary IoU and mIoU against FLOPs per image (log scale, MFLOPs), one
    point per model: accuracy against cost."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "miou", "mIoU"),
                           (axes[1], "boundary_iou", "boundary IoU (3 px)")):
        for r in rows:
            ax.scatter(r["flops"] / 1e6, r[key], s=40)
            ax.annotate(r["model"], (r["flops"] / 1e6, r[key]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())  # no crowded minor labels
        ax.set_xlabel("MFLOPs per image (forward)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
