"""Profiles, device choice, seeding and determinism.

A notebook never branches on hardware itself. It calls :func:`setup` once and
reads its budget (:mod:`utils.budgets`: image size, dataset size, epochs,
width, batch size) and its device from the result.

Profiles (environment variable ``COURSE_PROFILE``):

- ``ci``: the smallest budgets, always on the CPU, deterministic. The test suite
  sets it and the committed solutions were executed in it, so a learner who runs
  a notebook in ``ci`` gets the committed outputs on any machine.
- ``cpu``: a few minutes per chapter on a laptop CPU; results worth looking at.
- ``gpu``: full-width models trained long enough to give the README's results.

Unset, the profile is ``gpu`` where CUDA is available and ``cpu`` otherwise.
``COURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:N`` or ``mps``) overrides the device.
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

from utils.budgets import PROFILES, Budget, budget


def profile() -> str:
    """The active profile: ``COURSE_PROFILE``, else ``gpu`` with CUDA, else ``cpu``."""
    value = os.environ.get("COURSE_PROFILE", "").strip()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise ValueError(
            f"COURSE_PROFILE={value!r} is not a profile; expected one of {PROFILES}"
        )
    return value


def device(profile_name: str | None = None) -> torch.device:
    """The device to compute on: ``COURSE_DEVICE``, else CUDA, then MPS, then CPU.

    The ``ci`` profile always uses the CPU unless ``COURSE_DEVICE`` says
    otherwise, so that its outputs match the committed notebooks bit for bit.
    """
    requested = os.environ.get("COURSE_DEVICE", "").strip()
    if requested:
        return _check_device(requested)
    if (profile_name or profile()) == "ci":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"COURSE_DEVICE={name!r} is not a device; expected cpu, cuda, cuda:N or mps"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"COURSE_DEVICE={name!r} but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None:
        if dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"COURSE_DEVICE={name!r} but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"COURSE_DEVICE={name!r} but MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"COURSE_DEVICE={name!r}: device type {dev.type!r} is not supported; "
            "expected cpu, cuda, cuda:N or mps"
        )
    return dev


def describe_device(dev: torch.device) -> str:
    """The device in words, for the heading of a measured figure: the GPU's
    name, or the CPU's architecture and torch's thread count."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return (f"CPU ({platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads)")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) from one integer."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (or stop asking).

    With ``enabled`` an op that has no deterministic implementation raises when
    it runs instead of silently giving run-to-run differences. On CUDA, cuBLAS
    needs ``CUBLAS_WORKSPACE_CONFIG`` for this; it is set when missing, and a
    value that is set but not one of the two documented ones is an error.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    if enabled and torch.cuda.is_available():
        value = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if value not in (":4096:8", ":16:8"):
            raise ValueError(
                f"CUBLAS_WORKSPACE_CONFIG={value!r} does not make cuBLAS "
                "deterministic; use ':4096:8' or ':16:8'"
            )
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


@dataclass(frozen=True)
class Runtime:
    """What :func:`setup` decided for one chapter."""

    chapter: str  # the chapter's notebook name, e.g. "00_introduction"
    profile: str  # "ci", "cpu" or "gpu"
    budget: Budget  # the chapter's budget in that profile
    device: torch.device  # where to compute
    seed: int  # the seed everything was seeded with
    deterministic: bool  # whether deterministic kernels were requested

    @property
    def amp(self) -> bool:
        """Mixed precision is used on CUDA only."""
        return self.device.type == "cuda"

    @property
    def progress(self) -> bool:
        """Progress bars everywhere but ``ci`` (they write to stderr, which nbval
        compares)."""
        return self.profile != "ci"


def setup(chapter: str, seed: int = 0, deterministic: bool | None = None) -> Runtime:
    """Pick profile, budget and device for ``chapter``; seed and set determinism.

    ``deterministic`` defaults to True except in the ``gpu`` profile, where
    speed matters more than bit-for-bit repeatability.
    """
    name = profile()
    chosen = budget(chapter, name)
    det = name != "gpu" if deterministic is None else deterministic
    seed_everything(seed)
    set_deterministic(det)
    return Runtime(chapter, name, chosen, device(name), seed, det)
