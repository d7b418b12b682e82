"""Training configuration: one dataclass for the notebooks and the command line."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from utils.budgets import Budget
from utils.data import IGNORE_INDEX


@dataclass
class TrainConfig:
    """How :func:`utils.train.fit` trains. Every field is checked on creation:
    a wrong value is an error naming the field, never a silent fallback."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 16  # images per step, over all processes together
    lr: float = 3e-3  # peak learning rate (AdamW, cosine decay after warm-up)
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    warmup_steps: int = 20  # linear warm-up from 0 to lr, in optimiser steps
    seed: int = 0  # each epoch starts from seed + epoch, so resume replays exactly
    workers: int = 0  # DataLoader worker processes (0: load in the main process)
    ignore_index: int = IGNORE_INDEX  # target value no loss and no metric counts
    amp: bool | None = None  # mixed precision; None: on CUDA only
    progress: bool = True  # tqdm bars (off in the ci profile: they write to stderr)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("workers", "warmup_steps"):
            _check_int(name, getattr(self, name), low=0)
        _check_int("seed", self.seed, low=0, high=2**32 - 1)
        _check_int("ignore_index", self.ignore_index, low=0)
        for name, low_ok in (("lr", False), ("weight_decay", True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                not math.isfinite(value) or value < 0 or (value == 0 and not low_ok)
            ):
                kind = ">= 0" if low_ok else "> 0"
                raise ValueError(
                    f"{name} must be a finite number {kind}, got {value!r}")
        if self.amp not in (None, True, False):
            raise ValueError(f"amp must be None, True or False, got {self.amp!r}")

    @classmethod
    def from_budget(cls, budget: Budget, **overrides) -> TrainConfig:
        """Epochs, batch size and learning rate from a chapter's budget."""
        fields = dict(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr)
        fields.update(overrides)
        return cls(**fields)

    # Fields that change what a resumed run computes (``progress`` and
    # ``workers`` do not: items are seeded per index, whoever loads them).
    RESUME_FIELDS = ("batch_size", "lr", "weight_decay", "warmup_steps", "seed",
                     "ignore_index")

    def differences(self, saved: dict) -> list[str]:
        """``"name: saved -> now"`` for each field of :data:`RESUME_FIELDS` that
        differs from a checkpoint's saved configuration."""
        now = asdict(self)
        return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in self.RESUME_FIELDS
                if saved.get(k) != now[k]]


def _check_int(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
        high is not None and value > high
    ):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
