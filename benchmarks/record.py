"""What the benchmarks write: results as JSON that the chapters read back.

A results file is written whole or not at all (a temporary file renamed over
it), so a run killed while writing leaves the previous file in place.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path

import torch

from data_scripts.common import write_json
from utils import runtime


def plain(x):
    """``x`` with tensors and tuples turned into JSON's numbers and lists, and
    NaN into ``None`` (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return plain(x.tolist())
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def header(benchmark: str, rt, budget) -> dict:
    """What a results file says about the run: the benchmark, the profile and
    its budget (``rt`` from ``runtime.setup``), the machine, threads, date."""
    return {"benchmark": benchmark, "profile": rt.profile,
            "budget": dataclasses.asdict(budget),
            "device": runtime.describe_device(rt.device),
            "threads": torch.get_num_threads(),
            "date": datetime.date.today().isoformat()}


def write_results(path: Path, results: dict) -> None:
    """Write ``results`` (made :func:`plain`) as JSON to ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), plain(results))
