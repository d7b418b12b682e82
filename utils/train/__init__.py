"""Training: `fit`, `train_one_epoch`, `evaluate` and `python -m utils.train`."""

from utils.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.train.config import TrainConfig
from utils.train.loop import evaluate, fit, predict, train_one_epoch

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "train_one_epoch",
]
