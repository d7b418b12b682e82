"""Training for every task: ``fit``, ``train_one_epoch``, ``evaluate`` and
``python -m utils.train``.

- :mod:`~utils.train.tasks`: semantic, instance and panoptic segmentation (the
  loss terms, the evaluation, the metrics.csv columns);
- :mod:`~utils.train.loop`: one epoch of training, one evaluation;
- :mod:`~utils.train.fit`: optimiser, schedule, checkpoints, resume, DDP;
- :mod:`~utils.train.checkpoint`, :mod:`~utils.train.distributed`,
  :mod:`~utils.train.config`, and the command line :mod:`~utils.train.cli`.
"""

from utils.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.train.config import TrainConfig
from utils.train.fit import fit
from utils.train.loop import evaluate, predict, train_one_epoch
from utils.train.tasks import InstanceTask, PanopticTask, SemanticTask

__all__ = [
    "CheckpointError",
    "InstanceTask",
    "PanopticTask",
    "SemanticTask",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "train_one_epoch",
]
