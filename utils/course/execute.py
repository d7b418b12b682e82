"""Run notebooks in a fresh kernel: execute a solution in place, or grade a
learner's submission by its check cells."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from utils.course.notebooks import dumps, with_nbgrader_metadata


def _client(nb, path: Path, allow_errors: bool, timeout: int) -> NotebookClient:
    # The kernel inherits os.environ: the ci profile is what is committed, and
    # COURSE_ROOT lets a notebook outside the repository find utils/.
    os.environ["COURSE_PROFILE"] = "ci"
    os.environ["COURSE_ROOT"] = str(Path(__file__).resolve().parents[2])
    return NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    )


def execute_in_place(path, timeout: int = 600) -> float:
    """Execute ``path`` top to bottom in the ``ci`` profile and save it with its
    outputs; return the seconds it took. A failing cell raises and the file is
    left as it was."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    _client(nb, path, allow_errors=False, timeout=timeout).execute()
    seconds = time.perf_counter() - started
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    tagged = with_nbgrader_metadata(nbformat.from_dict(nb), path.stem)
    path.write_text(dumps(tagged), encoding="utf-8")
    return seconds


def grade(path, timeout: int = 600) -> list[tuple[str, bool, str]]:
    """Execute a submitted notebook (not saved) and return, for each graded
    check cell, ``(grade_id, passed, first line of the error)``."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb = nbformat.from_dict(with_nbgrader_metadata(nb, path.stem))
    try:
        _client(nb, path, allow_errors=True, timeout=timeout).execute()
    except CellExecutionError:  # a timeout; the cells that ran are graded
        pass
    results = []
    for cell in nb.cells:
        info = cell.get("metadata", {}).get("nbgrader", {})
        if not info.get("grade"):
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        ran = cell.get("execution_count") is not None
        if errors:
            message = f"{errors[0].get('ename')}: {errors[0].get('evalue', '')}"
        elif not ran:
            message = "not run"
        else:
            message = ""
        results.append(
            (
                info["grade_id"],
                ran and not errors,
                message.splitlines()[0] if message else "",
            )
        )
    return results
