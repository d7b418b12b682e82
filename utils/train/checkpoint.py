"""Checkpoints: written atomically, verified by a checksum, read without
running code.

- **Atomic**: :func:`save_checkpoint` writes a temporary file next to the
  target, flushes it to disk and renames it over the target, so the target is
  always a whole checkpoint. A process killed mid-write leaves only a
  ``checkpoint.pt.*.tmp`` file, which the next save removes (and says so).
- **Verified**: the checkpoint stores a SHA-256 of its own content (every
  tensor's bytes, dtype and shape, and every plain value), recomputed on load.
  A flipped byte anywhere that still unpickles is caught; one that does not is
  a read error.
- **Safe**: read with ``weights_only=True``: only tensors and plain Python
  values are unpickled, so a checkpoint can never run code.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

import torch

FORMAT = 2  # bump when the checkpoint's layout changes


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, damaged or from another model."""


def content_digest(state) -> str:
    """SHA-256 of a checkpoint's content: tensors by dtype, shape and bytes,
    other values by their ``repr``, dict keys in sorted order."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for key in sorted(x, key=repr):
                h.update(repr(key).encode())
                feed(x[key])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for item in x:
                feed(item)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    feed(state)
    return h.hexdigest()


def remove_leftovers(path) -> list[Path]:
    """Delete the temporary files that killed saves of ``path`` left behind;
    return them."""
    path = Path(path)
    found = sorted(path.parent.glob(f"{path.name}.*.tmp")) if path.parent.is_dir() \
        else []
    for leftover in found:
        leftover.unlink(missing_ok=True)
    return found


def save_checkpoint(state: dict, path, log=None) -> None:
    """Write ``state`` (plus its format and checksum) to ``path`` so that
    ``path`` is always whole. ``log``, if given, is told about leftovers of
    earlier, killed saves that were removed."""
    path = Path(path)
    removed = remove_leftovers(path)
    if removed and log is not None:
        log(f"removed {len(removed)} unfinished checkpoint file(s) of an earlier, "
            f"interrupted run: {', '.join(p.name for p in removed)}")
    body = {"format": FORMAT, **state}
    body["checksum"] = content_digest(body)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.",
                                   suffix=".tmp")
    except OSError as err:
        raise CheckpointError(f"cannot write a checkpoint into {path.parent}: "
                              f"{err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) \
            else (err.strerror or str(err))
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}; the "
                              "previous checkpoint, if any, is intact") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What a checkpoint of :func:`utils.train.fit` holds, and the type of each.
_SCHEMA = {"model": dict, "optimizer": dict, "scheduler": dict, "history": list,
           "config": dict, "meta": dict, "task": str}


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` (one line) when the file is missing,
    unreadable, not this course's, damaged (checksum) or malformed (a field of
    the wrong type).
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
            reason = text.splitlines()[0][:200] if text else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint of this course (format {FORMAT} expected)"
        )
    stored = state.pop("checksum", None)
    if not isinstance(stored, str) or content_digest(state) != stored:
        raise CheckpointError(
            f"{path} is damaged: its content does not match its checksum; delete "
            "it and train again (or resume from a copy)"
        )
    for key, kind in _SCHEMA.items():
        if key in state and not isinstance(state[key], kind):
            raise CheckpointError(
                f"{path}: '{key}' is a {type(state[key]).__name__}, expected a "
                f"{kind.__name__}"
            )
    return state
