"""Run a notebook in a fresh kernel, in the ``ci`` profile, timing every cell.

:func:`run` is what ``execute`` (a solution, saved in place) and ``grade`` (a
submission, never saved) share. Each code cell's wall time and the kernel's CPU
time are recorded, because nbgrader interrupts any cell that runs longer than
its per-cell limit (30 s by default): ``python -m utils.course execute`` names
the slowest cells so that a chapter's author sees one coming.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from utils.course.notebooks import dumps, with_nbgrader_metadata

ROOT = Path(__file__).resolve().parents[2]
SLOW_CELL_S = 10.0  # a ci cell above this is a risk under nbgrader's 30 s limit


@dataclass
class CellTime:
    index: int  # position of the cell in the notebook (0-based, Markdown counted)
    wall_s: float  # seconds from sending the cell to its reply
    cpu_s: float | None  # kernel CPU seconds (user + system); None off Linux
    first_line: str  # the cell's first line, to recognise it


@dataclass
class Run:
    seconds: float  # wall time of the whole notebook
    cells: list[CellTime] = field(default_factory=list)
    status: dict[int, str] = field(default_factory=dict)  # cell index: "ok"/"error"
    error: str = ""  # why execution stopped early (a dead kernel)

    def slowest(self, n: int = 3) -> list[CellTime]:
        return sorted(self.cells, key=lambda c: c.wall_s, reverse=True)[:n]


def _kernel_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) the kernel process has used, from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(nb, path: Path, *, allow_errors: bool, timeout: int,
        env: dict | None = None) -> Run:
    """Execute ``nb`` (modified in place: outputs, execution counts) with the
    notebook's folder as working directory, in the ``ci`` profile, with
    ``COURSE_ROOT`` set to this repository unless ``env`` says otherwise.

    With ``allow_errors`` neither a failing cell nor one interrupted after
    ``timeout`` seconds stops the run, and a dead kernel ends it (recorded in
    ``Run.error``); without, each of them raises.
    """
    variables = {"COURSE_PROFILE": "ci", "COURSE_ROOT": str(ROOT), **(env or {})}
    saved = {name: os.environ.get(name) for name in variables}
    for name, value in variables.items():  # the kernel inherits os.environ
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    result = Run(0.0)
    clock: dict = {}

    def before(cell, cell_index, **_):
        if "pid" not in clock:
            clock["pid"] = getattr(getattr(client.km, "provisioner", None), "pid", None)
        clock["wall"] = time.perf_counter()
        clock["cpu"] = _kernel_cpu_s(clock["pid"])

    def after(cell, cell_index, execute_reply=None, **_):
        # The reply's status, not the outputs: a learner's cell could install
        # an exception handler that prints nothing (nbgrader checks it too).
        content = (execute_reply or {}).get("content", {})
        result.status[cell_index] = content.get("status", "error")
        cpu = _kernel_cpu_s(clock.get("pid"))
        result.cells.append(CellTime(
            cell_index, time.perf_counter() - clock["wall"],
            None if cpu is None or clock["cpu"] is None else cpu - clock["cpu"],
            cell.source.strip().split("\n", 1)[0][:60]))

    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
        interrupt_on_timeout=allow_errors,  # then a cell over time fails alone
        resources={"metadata": {"path": str(Path(path).parent)}},
        on_cell_execute=before, on_cell_executed=after)
    started = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, DeadKernelError, CellTimeoutError) as err:
        if not allow_errors:
            raise
        text = str(err).strip()
        result.error = text.splitlines()[-1] if text else type(err).__name__
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    result.seconds = time.perf_counter() - started
    return result


def execute_in_place(path, timeout: int = 600) -> Run:
    """Execute ``path`` top to bottom in the ``ci`` profile and save it with its
    outputs; return the timings. A failing cell raises and the file is left as
    it was."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    timing = run(nb, path, allow_errors=False, timeout=timeout)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    tagged = with_nbgrader_metadata(nbformat.from_dict(nb), path.stem)
    path.write_text(dumps(tagged), encoding="utf-8")
    return timing
