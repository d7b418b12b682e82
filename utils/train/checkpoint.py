"""Checkpoints: written atomically, read back with ``weights_only=True``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = 1  # bump when the checkpoint's layout changes


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or from another model."""


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` to ``path`` so that ``path`` is always whole: a temporary
    file in the same directory, flushed to disk, then renamed over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Only tensors and plain Python values are unpickled (``weights_only=True``):
    loading a checkpoint can never run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        text = str(err).strip()
        if "Weights only load failed" in text:
            reason = "not a torch file, or it holds more than tensors and plain values"
        else:
            reason = text.splitlines()[0] if text else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint of this course (format {FORMAT} expected)"
        )
    return state
