"""Entry point of ``python -m utils.train``; see :mod:`utils.train.cli`."""

import sys

from utils.train.cli import main

sys.exit(main())
