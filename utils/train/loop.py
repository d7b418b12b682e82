"""One epoch of training and one evaluation, for every task.

``train_one_epoch`` and ``evaluate`` are short on purpose: read them once and
you know what every training cell in the course does. What differs between
semantic, instance and panoptic segmentation (the loss terms, the metrics) is
in the task object (:mod:`utils.train.tasks`); what a real run needs around
the two (optimiser, schedule, checkpoints, resume, DDP) is in
:mod:`utils.train.fit`.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from utils.metrics.reduce import all_reduce_sum_
from utils.train.tasks import to_device


def train_one_epoch(model, loader, optimizer, task, device, *, scheduler=None,
                    scaler=None, dtype=None, epoch=0, progress=False) -> dict:
    """One pass over ``loader``. Returns ``train_loss`` (the summed loss terms)
    and each named term, as means per image over all ranks.

    Stops with ``FloatingPointError`` at the first non-finite loss, naming the
    term: continuing would only turn every weight into NaN.
    """
    model.train()
    sums, seen = None, torch.zeros((), dtype=torch.float64, device=device)
    bar = tqdm(loader, desc=f"epoch {epoch + 1} train", disable=not progress,
               leave=False)
    for step, (images, targets) in enumerate(bar):
        images, targets = to_device(images, device), to_device(targets, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            terms = task.losses(model, images, targets)
        terms = {name: value.float() for name, value in terms.items()}
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            bad = [n for n, v in terms.items() if not torch.isfinite(v)]
            raise FloatingPointError(
                f"loss {', '.join(bad)} is {terms[bad[0]].item()} at epoch "
                f"{epoch + 1}, step {step + 1}; try a lower learning rate, and "
                "check the images for NaN and the targets for labels out of range"
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
        batch = torch.stack([loss, *terms.values()]).detach().double() * len(images)
        sums = batch if sums is None else sums + batch
        seen += len(images)
        if progress:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    all_reduce_sum_(sums)
    all_reduce_sum_(seen)
    means = dict(zip(["train_loss", *terms], (sums / seen.clamp(min=1)).tolist()))
    means.pop("loss", None)  # the semantic task's one term is train_loss itself
    return means


@torch.no_grad()
def evaluate(model, loader, task, device, *, dtype=None, progress=False) -> dict:
    """The task's metrics over the whole of ``loader``, all ranks together."""
    device = torch.device(device)
    model.eval()
    evaluator = task.evaluator(device)
    for images, targets in tqdm(loader, desc="evaluate", disable=not progress,
                                leave=False):
        images, targets = to_device(images, device), to_device(targets, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            evaluator.update(model, images, targets)
    evaluator.all_reduce()
    return evaluator.compute()


@torch.no_grad()
def predict(model, images: torch.Tensor, device) -> torch.Tensor:
    """Class labels ``int64 [B, H, W]`` (on the CPU) of a semantic model for
    images ``[B, 3, H, W]``."""
    model.eval()
    return model(images.to(device)).argmax(dim=1).cpu()


def amp_dtype(device: torch.device, enabled: bool | None) -> torch.dtype | None:
    """The autocast dtype: on CUDA bfloat16 where the GPU has it, else float16;
    on the CPU bfloat16 only when asked (``enabled=True``); None (full
    precision) otherwise."""
    if enabled is False or (device.type != "cuda" and not enabled):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


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
