"""Test-suite set-up for tests/ and solutions/ alike: the ci profile, for the
tests and for every notebook kernel that nbval starts (kernels inherit this
process's environment)."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
os.environ["COURSE_PROFILE"] = "ci"
os.environ.pop("COURSE_DEVICE", None)
os.environ["COURSE_ROOT"] = str(ROOT)  # kernels import this checkout's utils
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _torch_global_state_is_restored():
    """A test that trains calls runtime.setup, which asks torch for deterministic
    kernels process-wide; later tests must not inherit that (F.max_unpool2d, a
    reference in the SegNet tests, has no deterministic kernel and would raise)."""
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
