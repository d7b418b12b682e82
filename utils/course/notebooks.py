"""Build the student notebooks from the solutions, and check that they agree.

``solutions/NN_name.ipynb`` is the one source. :func:`student_version` turns it
into ``chapters/NN_name.ipynb``: each region between nbgrader's
``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError()`` (``YOUR ANSWER HERE`` in Markdown), hidden-test
regions are dropped, and every output is stripped. Exercise and check cells
carry nbgrader's cell metadata, so a teacher can put the solutions into
nbgrader's ``source/`` folder and use it as it is.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CHECK_CALL = re.compile(r"^\s*checks\.\w+\(", re.MULTILINE)
GENERATED = (
    "<!-- Generated from solutions/{name} by `python -m utils.course build`; "
    "edit that file, not this one. -->\n"
)


class NotebookError(Exception):
    """A notebook that breaks the course's conventions."""


def read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NotebookError(f"{path} is not valid notebook JSON: {err}") from None


def dumps(nb: dict) -> str:
    """Serialise like Jupyter does (indent 1, sorted keys), so diffs stay small."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def strip_regions(text: str, where: str, markdown: bool = False) -> str:
    """Replace solution regions and drop hidden-test regions of one cell."""
    out, inside, hidden = [], False, False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == BEGIN_HIDDEN:
            hidden = True
        elif stripped == END_HIDDEN:
            hidden = False
        elif stripped == BEGIN:
            if inside:
                raise NotebookError(f"{where}, line {number}: nested {BEGIN}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            if markdown:
                out.append("YOUR ANSWER HERE\n")
            else:
                out.append(f"{indent}# YOUR CODE HERE\n")
                out.append(f"{indent}raise NotImplementedError()\n")
        elif stripped == END:
            if not inside:
                raise NotebookError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside and not hidden:
            out.append(line)
    if inside:
        raise NotebookError(f"{where}: {BEGIN} is never closed")
    if hidden:
        raise NotebookError(f"{where}: {BEGIN_HIDDEN} is never closed")
    return "".join(out).rstrip("\n")


def with_nbgrader_metadata(nb: dict, stem: str) -> dict:
    """A copy of ``nb`` whose exercise cells are nbgrader solution cells and
    whose check cells are graded, locked, one-point test cells."""
    nb = copy.deepcopy(nb)
    exercise = check = 0
    for cell in nb["cells"]:
        meta = cell.setdefault("metadata", {})
        meta.pop("nbgrader", None)
        text = _source(cell)
        if BEGIN in text:
            exercise += 1
            meta["nbgrader"] = {
                "grade": False,
                "grade_id": f"{stem}-exercise-{exercise}",
                "locked": False,
                "schema_version": 3,
                "solution": True,
                "task": False,
            }
        elif cell["cell_type"] == "code" and CHECK_CALL.search(text):
            check += 1
            meta["nbgrader"] = {
                "grade": True,
                "grade_id": f"{stem}-check-{check}",
                "locked": True,
                "points": 1,
                "schema_version": 3,
                "solution": False,
                "task": False,
            }
    return nb


def student_version(solution: dict, name: str) -> dict:
    """The student notebook generated from the solution notebook ``name``."""
    nb = with_nbgrader_metadata(solution, Path(name).stem)
    for index, cell in enumerate(nb["cells"]):
        where = f"solutions/{name}, cell {index}"
        markdown = cell["cell_type"] == "markdown"
        _set_source(cell, strip_regions(_source(cell), where, markdown))
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if first is not None:
        _set_source(first, GENERATED.format(name=name) + _source(first))
    nb.setdefault("metadata", {})["course"] = {
        "generated_from": f"solutions/{name}",
        "generated_by": "python -m utils.course build",
    }
    return nb


def build(root: Path) -> list[Path]:
    """Write ``chapters/`` from ``solutions/`` (and refresh the solutions'
    nbgrader metadata); return the files that changed."""
    changed = []
    chapters = root / "chapters"
    chapters.mkdir(exist_ok=True)
    for sol_path in sorted((root / "solutions").glob("*.ipynb")):
        solution = read(sol_path)
        tagged = dumps(with_nbgrader_metadata(solution, sol_path.stem))
        if tagged != sol_path.read_text(encoding="utf-8"):
            sol_path.write_text(tagged, encoding="utf-8")
            changed.append(sol_path)
        out = chapters / sol_path.name
        text = dumps(student_version(solution, sol_path.name))
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            out.write_text(text, encoding="utf-8")
            changed.append(out)
    for orphan in sorted(chapters.glob("*.ipynb")):
        if not (root / "solutions" / orphan.name).exists():
            orphan.unlink()
            changed.append(orphan)
    return changed


def check(root: Path) -> list[str]:
    """Problems that would make CI or a learner unhappy; empty when all is well.

    - every solution is executed top to bottom: code cells numbered 1..n, no
      error outputs;
    - ``chapters/`` is exactly what :func:`build` would write;
    - no chapter without a solution.
    """
    problems = []
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    if not solutions:
        problems.append("solutions/ holds no notebooks")
    for sol_path in solutions:
        rel = f"solutions/{sol_path.name}"
        try:
            solution = read(sol_path)
            expected = dumps(student_version(solution, sol_path.name))
        except NotebookError as err:
            problems.append(str(err))
            continue
        code = [c for c in solution["cells"] if c["cell_type"] == "code"]
        counts = [c.get("execution_count") for c in code]
        if counts != list(range(1, len(code) + 1)):
            problems.append(
                f"{rel}: execution counts are {_summary(counts)}, expected "
                f"1..{len(code)}; run python -m utils.course execute {rel}"
            )
        for k, cell in enumerate(code, start=1):
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                problems.append(f"{rel}: code cell {k} has an error output")
        if dumps(with_nbgrader_metadata(solution, sol_path.stem)) != sol_path.read_text(
            encoding="utf-8"
        ):
            problems.append(
                f"{rel}: nbgrader metadata is stale; run python -m utils.course build"
            )
        chapter = root / "chapters" / sol_path.name
        if not chapter.exists():
            problems.append(
                f"chapters/{sol_path.name} is missing; run python -m utils.course build"
            )
        elif chapter.read_text(encoding="utf-8") != expected:
            problems.append(
                f"chapters/{sol_path.name} is stale; run python -m utils.course build"
            )
    for chapter in sorted((root / "chapters").glob("*.ipynb")):
        if not (root / "solutions" / chapter.name).exists():
            problems.append(f"chapters/{chapter.name} has no solutions/{chapter.name}")
    return problems


def _summary(counts) -> str:
    text = ", ".join(str(c) for c in counts[:8])
    return f"[{text}{', ...' if len(counts) > 8 else ''}]"
