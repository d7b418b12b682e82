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
# OpenMP threads that wait for each other sleep instead of spinning. Same work,
# same results; but on a machine whose cores are busy with other work, spinning
# threads made a TinyFCN training step 11x slower (674 ms against 60 ms on one
# thread; 81 ms with this setting), and a notebook that takes 14 s quietly took
# minutes. Set before torch is imported here or in any kernel nbval starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _torch_deterministic_state():
    import torch

    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())


_TORCH_DETERMINISTIC = _torch_deterministic_state()


@pytest.fixture(autouse=True)
def _torch_global_state_is_restored():
    """A test that trains calls runtime.setup, which asks torch for deterministic
    kernels process-wide; later tests must not inherit that (F.max_unpool2d, a
    reference in the SegNet tests, has no deterministic kernel and would raise)."""
    import torch

    yield
    # The state the session started with, not the one this test found: a
    # module-scoped fixture (test_cli_errors' trained run) sets it before any
    # function-scoped fixture can look.
    deterministic, warn_only = _TORCH_DETERMINISTIC
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
