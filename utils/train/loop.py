"""The training loop every chapter and the command line use.

``train_one_epoch`` and ``evaluate`` are short on purpose: read them once and
you know what every training cell in the course does. ``fit`` adds what a real
run needs around them: the optimiser and schedule, mixed precision on CUDA,
a checkpoint written atomically after every epoch, exact resume, ``metrics.csv``
and multi-process training under torchrun.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from utils.metrics import ConfusionMatrix
from utils.runtime import seed_everything
from utils.train import distributed
from utils.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.train.config import TrainConfig

CSV_FIELDS = (
    "epoch",
    "train_loss",
    "val_loss",
    "miou",
    "pixel_accuracy",
    "mean_dice",
    "lr",
    "seconds",
)


def amp_dtype(device: torch.device, enabled: bool | None) -> torch.dtype | None:
    """The autocast dtype: bfloat16 where the GPU has it, else float16; None
    (full precision) off CUDA or when disabled."""
    if device.type != "cuda" or enabled is False:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def check_targets(targets: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Labels must be in ``[0, num_classes)`` or ``ignore_index``. Checked here
    because on CUDA a bad label only surfaces as an opaque device-side assert."""
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= num_classes))
    if bad.any():
        values = targets[bad].unique()[:10].tolist()
        raise ValueError(
            f"targets hold labels {values} outside [0, {num_classes}) and not the "
            f"ignore index {ignore_index}; check the dataset's label mapping"
        )


def train_one_epoch(
    model,
    loader,
    optimizer,
    loss_fn,
    device,
    *,
    scheduler=None,
    scaler=None,
    dtype=None,
    epoch=0,
    ignore_index=255,
    progress=False,
) -> float:
    """One pass over ``loader``; returns the mean loss per image (all ranks).

    Stops with ``FloatingPointError`` at the first non-finite loss: continuing
    would only turn every weight into NaN.
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1} train", disable=not progress, leave=False
    )
    for step, (images, targets) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        check_targets(targets, logits.shape[1], ignore_index)
        loss = loss_fn(logits.float(), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                "try a lower learning rate, and check the images for NaN and the "
                "targets for labels outside [0, num_classes) other than 255"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # float16 needs its gradients scaled up
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach().double() * images.shape[0]
        seen += images.shape[0]
        if progress:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    distributed.all_reduce_sum(loss_sum)
    distributed.all_reduce_sum(seen)
    return float(loss_sum / seen.clamp(min=1))


@torch.no_grad()
def evaluate(
    model,
    loader,
    num_classes,
    device,
    *,
    loss_fn=None,
    ignore_index=255,
    dtype=None,
    progress=False,
) -> dict:
    """Confusion-matrix metrics over the whole of ``loader`` (all ranks), plus
    ``loss``, the mean loss per image."""
    device = torch.device(device)
    model.eval()
    loss_fn = loss_fn or _default_loss(ignore_index)
    matrix = ConfusionMatrix(num_classes, ignore_index, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    for images, targets in tqdm(
        loader, desc="evaluate", disable=not progress, leave=False
    ):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        logits = logits.float()
        loss_sum += loss_fn(logits, targets).double() * images.shape[0]
        seen += images.shape[0]
        matrix.update(logits, targets)
    matrix.all_reduce()
    distributed.all_reduce_sum(loss_sum)
    distributed.all_reduce_sum(seen)
    metrics = matrix.compute()
    metrics["loss"] = float(loss_sum / seen.clamp(min=1))
    return metrics


@torch.no_grad()
def predict(model, images: torch.Tensor, device) -> torch.Tensor:
    """Class labels ``int64 [B, H, W]`` (on the CPU) for images ``[B, 3, H, W]``."""
    model.eval()
    return model(images.to(device)).argmax(dim=1).cpu()


def _default_loss(ignore_index):
    def cross_entropy(logits, targets):
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)

    return cross_entropy


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up to the peak rate, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EpochSeeded(torch.utils.data.Dataset):
    """Item ``i`` of epoch ``e`` is loaded under the random seed (seed, e, i).

    Random augmentation then depends on neither the number of processes nor
    the number of workers nor the order of loading: one process and two DDP
    ranks flip exactly the same images, and a resumed run replays its epoch.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item_seed = (self.seed * 1_000_003 + self.epoch) * 1_000_003 + index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed % 2**63)
            return self.dataset[index]


def fit(
    model: nn.Module,
    train_set,
    val_set,
    config: TrainConfig,
    *,
    num_classes: int,
    device,
    out_dir=None,
    resume=None,
    loss_fn=None,
    collate_fn=None,
    meta: dict | None = None,
    log=print,
) -> list[dict]:
    """Train ``model`` for ``config.epochs`` epochs; return one dict per epoch.

    With ``out_dir``, rank 0 writes ``checkpoint.pt`` (atomically, after every
    epoch) and ``metrics.csv``. ``resume`` (a path) continues from a checkpoint:
    because every epoch starts from the seed ``config.seed + epoch`` and the
    checkpoint holds model, optimiser, schedule and scaler, the resumed run
    gives the same losses as one that was never interrupted. Under torchrun the
    global ``config.batch_size`` is split evenly over the processes. ``meta`` is
    stored in the checkpoint (the command line records model and dataset).
    """
    device = torch.device(device)
    world = distributed.world_size()
    if config.batch_size % world:
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the {world} processes"
        )
    per_rank = config.batch_size // world
    loss_fn = loss_fn or _default_loss(config.ignore_index)
    model.to(device)
    net = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    train_sampler = distributed.ShardedSampler(
        len(train_set), True, config.seed, drop_remainder=True
    )
    val_sampler = distributed.ShardedSampler(len(val_set), False)
    # Workers are started anew each epoch (not persistent), so that they copy
    # the training items' current epoch.
    loader_args = dict(
        num_workers=config.workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
    )
    train_items = EpochSeeded(train_set, config.seed)
    train_loader = torch.utils.data.DataLoader(
        train_items, per_rank, sampler=train_sampler, **loader_args
    )
    val_loader = torch.utils.data.DataLoader(
        val_set, per_rank, sampler=val_sampler, **loader_args
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"the training set ({len(train_set)} images) is too small for one batch"
        )

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    total_steps = config.epochs * len(train_loader)
    # Short runs (the ci profile) warm up for at most a fifth of their steps.
    warmup = min(config.warmup_steps, total_steps // 5)
    scheduler = warmup_cosine(optimizer, warmup, total_steps)
    dtype = amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    history: list[dict] = []
    if resume is not None:
        state = load_checkpoint(resume, map_location=device)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f"{resume} does not fit this model and optimiser ({first})"
            ) from None
        history = list(state["history"])
    start = len(history)
    if start >= config.epochs and distributed.is_main():
        log(f"checkpoint already has {start} epochs; nothing to do")

    out = Path(out_dir) if out_dir is not None else None
    show = config.progress and distributed.is_main()
    for epoch in range(start, config.epochs):
        seed_everything(config.seed + epoch)  # dropout replays after a resume
        train_sampler.set_epoch(epoch)
        train_items.set_epoch(epoch)
        started = time.perf_counter()
        train_loss = train_one_epoch(
            net,
            train_loader,
            optimizer,
            loss_fn,
            device,
            scheduler=scheduler,
            scaler=scaler,
            dtype=dtype,
            epoch=epoch,
            ignore_index=config.ignore_index,
            progress=show,
        )
        # Every rank evaluates rank 0's weights and BatchNorm statistics: the
        # model the checkpoint holds, so the reported metrics are that model's.
        distributed.broadcast_buffers(model)
        metrics = evaluate(
            model,
            val_loader,
            num_classes,
            device,
            loss_fn=loss_fn,
            ignore_index=config.ignore_index,
            dtype=dtype,
            progress=show,
        )
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": metrics["loss"],
            "miou": metrics["mean_iou"],
            "pixel_accuracy": metrics["pixel_accuracy"],
            "mean_dice": metrics["mean_dice"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        if out is not None and distributed.is_main():
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "history": history,
                    "config": asdict(config),
                    "num_classes": num_classes,
                    "meta": dict(meta or {}),
                },
                out / "checkpoint.pt",
            )
            write_metrics_csv(history, out / "metrics.csv")
        if distributed.is_main():
            log(
                f"epoch {epoch + 1}/{config.epochs}  train loss {train_loss:.4f}  "
                f"val loss {metrics['loss']:.4f}  mIoU {metrics['mean_iou']:.4f}  "
                f"pixel acc {metrics['pixel_accuracy']:.4f}  ({row['seconds']:.1f} s)"
            )
        distributed.barrier()
    return history


def write_metrics_csv(history: list[dict], path) -> None:
    """One row per epoch, written whole to a temporary file and renamed."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)
