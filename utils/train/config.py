"""Training configuration: one dataclass for the notebooks and the command line."""

from __future__ import annotations

from dataclasses import dataclass

from utils.budgets import Budget


@dataclass
class TrainConfig:
    """How :func:`utils.train.fit` trains."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 16  # images per step, over all processes together
    lr: float = 3e-3  # peak learning rate (AdamW, cosine decay after warm-up)
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    warmup_steps: int = 20  # linear warm-up from 0 to lr, in optimiser steps
    seed: int = 0  # each epoch starts from seed + epoch, so resume replays exactly
    workers: int = 0  # DataLoader worker processes (0: load in the main process)
    ignore_index: int = 255  # target value that counts in no loss and no metric
    amp: bool | None = None  # mixed precision; None: on CUDA only
    progress: bool = True  # tqdm bars (off in the ci profile: they write to stderr)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.workers < 0 or self.warmup_steps < 0:
            raise ValueError("workers and warmup_steps must be >= 0")

    @classmethod
    def from_budget(cls, budget: Budget, **overrides) -> TrainConfig:
        """Epochs, batch size and learning rate from a chapter's budget."""
        fields = dict(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr)
        fields.update(overrides)
        return cls(**fields)
