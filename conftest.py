"""Test-suite set-up for tests/ and solutions/ alike: the ci profile, for the
tests and for every notebook kernel that nbval starts (kernels inherit this
process's environment)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ["COURSE_PROFILE"] = "ci"
os.environ.pop("COURSE_DEVICE", None)
os.environ["COURSE_ROOT"] = str(ROOT)  # kernels import this checkout's utils
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
