"""``fit``: what a real run needs around ``train_one_epoch`` and ``evaluate``.

The optimiser and its schedule, mixed precision, a checkpoint written
atomically after every epoch, exact resume, ``metrics.csv`` and
multi-process training under torchrun, for every task. Each piece is a short
function of its own; :func:`fit` only puts them in order.
"""

from __future__ import annotations

import csv
import gc
import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from utils.runtime import seed_everything
from utils.train import distributed
from utils.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.train.config import TrainConfig
from utils.train.loop import (
    EpochSeeded,
    amp_dtype,
    evaluate,
    train_one_epoch,
    warmup_cosine,
)
from utils.train.tasks import SemanticTask


@dataclass
class Loaders:
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    items: EpochSeeded  # the training set, seeded per (epoch, index)


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None  # float16 only
    dtype: torch.dtype | None  # autocast dtype, None for full precision


def fit(model: nn.Module, train_set, val_set, config: TrainConfig, *, device,
        num_classes: int | None = None, task=None, out_dir=None, resume=None,
        loss_fn=None, collate_fn=None, meta: dict | None = None,
        log=print) -> list[dict]:
    """Train ``model`` for ``config.epochs`` epochs; return one dict per epoch.

    ``task`` is a task of :mod:`utils.train.tasks`; without one, the task is
    semantic segmentation with ``num_classes`` classes (and ``loss_fn``, default
    cross-entropy). With ``out_dir``, rank 0 writes ``checkpoint.pt`` (after
    every epoch) and ``metrics.csv``. ``resume`` (a path) continues from a
    checkpoint: every epoch starts from the seed ``config.seed + epoch`` and the
    checkpoint holds model, optimiser, schedule and scaler, so the resumed run
    gives the same losses as one that was never interrupted. Under torchrun
    the global ``config.batch_size`` is split evenly over the processes.
    ``meta`` is stored in the checkpoint (the command line records model and
    dataset there).
    """
    if task is None:
        if num_classes is None:
            raise TypeError("fit needs num_classes (semantic) or a task")
        task = SemanticTask(num_classes, config.ignore_index, loss_fn)
    device = torch.device(device)
    model.to(device)
    net = data_parallel(model, device)
    loaders = make_loaders(train_set, val_set, config, collate_fn or task.collate,
                           device)
    opt = make_optimisation(model, config, config.epochs * len(loaders.train),
                            device)
    history = [] if resume is None else restore(resume, model, opt, config, task,
                                                log)
    if len(history) >= config.epochs and distributed.is_main():
        log(f"checkpoint already has {len(history)} epochs; nothing to do")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
    for epoch in range(len(history), config.epochs):
        row = run_epoch(net, model, loaders, opt, task, config, device, epoch)
        history.append(row)
        if distributed.is_main():
            if out is not None:
                save(out, model, opt, history, config, task, meta, log)
            log(f"epoch {epoch + 1}/{config.epochs}  train loss "
                f"{row['train_loss']:.4f}  {task.describe(row)}  "
                f"({row['seconds']:.1f} s)")
        distributed.barrier()
    if net is not model:  # destroy the DDP wrapper now, not at interpreter exit
        del net
        gc.collect()
    return history


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel under torchrun, else itself."""
    if distributed.world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def make_loaders(train_set, val_set, config: TrainConfig, collate_fn,
                 device) -> Loaders:
    world = distributed.world_size()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the "
                         f"{world} processes")
    per_rank = config.batch_size // world
    items = EpochSeeded(train_set, config.seed)
    # Workers are started anew each epoch (not persistent), so that they copy
    # the training items' current epoch.
    common = dict(num_workers=config.workers, collate_fn=collate_fn,
                  pin_memory=torch.device(device).type == "cuda")
    train = torch.utils.data.DataLoader(
        items, per_rank, sampler=distributed.train_sampler(items, config.seed),
        **common)
    val = torch.utils.data.DataLoader(
        val_set, per_rank, sampler=distributed.EvalShards(len(val_set)), **common)
    if len(train) == 0:
        raise ValueError(f"the training set ({len(train_set)} images) is too small "
                         f"for one batch of {config.batch_size}")
    if len(val_set) == 0:
        raise ValueError("the validation set is empty")
    return Loaders(train, val, items)


def make_optimisation(model: nn.Module, config: TrainConfig, total_steps: int,
                      device) -> Optimisation:
    """AdamW, linear warm-up then cosine decay, and mixed precision on CUDA."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    # Short runs (the ci profile) warm up for at most a fifth of their steps.
    warmup = min(config.warmup_steps, total_steps // 5)
    dtype = amp_dtype(torch.device(device), config.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return Optimisation(optimizer, warmup_cosine(optimizer, warmup, total_steps),
                        scaler, dtype)


def run_epoch(net, model, loaders: Loaders, opt: Optimisation, task, config,
              device, epoch: int) -> dict:
    """Train one epoch, evaluate, and return the epoch's row."""
    seed_everything((config.seed + epoch) % 2**32)  # dropout replays on resume
    loaders.train.sampler.set_epoch(epoch)
    loaders.items.set_epoch(epoch)
    show = config.progress and distributed.is_main()
    started = time.perf_counter()
    losses = train_one_epoch(net, loaders.train, opt.optimizer, task, device,
                             scheduler=opt.scheduler, scaler=opt.scaler,
                             dtype=opt.dtype, epoch=epoch, progress=show)
    # Every rank evaluates rank 0's weights and BatchNorm statistics: the
    # model the checkpoint holds, so the reported metrics are that model's.
    distributed.broadcast_buffers(model)
    metrics = evaluate(model, loaders.val, task, device, dtype=opt.dtype,
                       progress=show)
    return {"epoch": epoch + 1, **losses,
            **{k: metrics[k] for k in task.columns},
            "lr": opt.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started}


def save(out: Path, model, opt: Optimisation, history, config, task, meta,
         log) -> None:
    """The checkpoint (atomically) and ``metrics.csv``."""
    save_checkpoint({
        "model": model.state_dict(),
        "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(),
        "scaler": opt.scaler.state_dict() if opt.scaler is not None else None,
        "history": history,
        "config": asdict(config),
        "task": task.name,
        "meta": dict(meta or {}),
    }, out / "checkpoint.pt", log=log)
    write_metrics_csv(history, out / "metrics.csv")


def restore(path, model, opt: Optimisation, config: TrainConfig, task,
            log) -> list[dict]:
    """Load a checkpoint of :func:`fit` into model, optimiser, schedule and
    scaler; return its history. Anything that does not fit is one
    :class:`CheckpointError` line."""
    state = load_checkpoint(path, map_location="cpu")
    if state.get("task") != task.name:
        raise CheckpointError(f"{path} is a checkpoint of a {state.get('task')} "
                              f"model, not of a {task.name} one")
    changed = config.differences(state.get("config", {}))
    if changed:
        raise CheckpointError(f"{path} was trained with other settings ("
                              f"{'; '.join(changed)}); resume with the same ones")
    try:
        model.load_state_dict(state["model"])
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.scheduler.load_state_dict(state["scheduler"])
        if opt.scaler is not None and state.get("scaler"):
            opt.scaler.load_state_dict(state["scaler"])
        _check_optimizer_state(opt.optimizer)
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"{path} does not fit this model and optimiser ({first})"
        ) from None
    history = state["history"]
    if not all(isinstance(r, dict) and all(isinstance(v, (int, float))
                                           for v in r.values()) for r in history):
        raise CheckpointError(f"{path}: its history is not a list of rows of numbers")
    saved_epochs = state["config"].get("epochs")
    if saved_epochs != config.epochs and distributed.is_main():
        log(f"note: resuming a run planned for {saved_epochs} epochs as one of "
            f"{config.epochs}: the learning-rate schedule changes from epoch "
            f"{len(history) + 1}, so this is not the run a fresh "
            f"{config.epochs}-epoch run gives")
    return [dict(r) for r in history]


def _check_optimizer_state(optimizer) -> None:
    """Every per-parameter tensor of the optimiser's state has its parameter's
    shape (``load_state_dict`` does not check it; the first step would fail)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.ndim and (
                    value.shape != p.shape
                ):
                    raise ValueError(f"optimiser state {name!r} is "
                                     f"{list(value.shape)} for a parameter of "
                                     f"{list(p.shape)}")


def write_metrics_csv(history: list[dict], path) -> None:
    """One row per epoch, written whole to a temporary file and renamed."""
    fields = list(history[0]) if history else ["epoch"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)
