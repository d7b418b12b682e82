"""Grade a submitted notebook against the course's own check cells.

The graded cells are the check cells of ``solutions/<chapter>.ipynb`` (the one
source), found in the submission by their nbgrader grade id *and* their
content; nothing is renumbered. A check scores its point only if

- the submission has the cell with that grade id, unchanged (whitespace at
  line ends aside): a missing or edited check cell scores 0, and says so;
- it comes after the exercises it checks, as in the course's notebook;
- no cell of the learner's rebinds or patches ``checks`` (the check module);
- it runs without an error in a fresh kernel (the execute reply's status).

The setup cell (locked, like the check cells) is run as the course wrote it,
whatever the submission's copy says, as nbgrader does. Cells after the last
check cell cannot change a score and are not run.

What it does not catch: code written on purpose to defeat the checks from
inside the kernel (patching ``utils`` through ``sys.modules``, say). Checks run
in the learner's kernel, as with nbgrader; a teacher still reads the work.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from utils.course.execute import ROOT, run
from utils.course.notebooks import NotebookError, read, with_nbgrader_metadata

GRADE_ID = re.compile(r"^(?P<stem>.+)-(?:check-\d+|exercise-\d+|setup)$")


class GradingError(Exception):
    """A submission that cannot be graded at all (not a notebook, no chapter)."""


@dataclass
class CheckResult:
    grade_id: str
    points: float  # what the check is worth
    passed: bool
    message: str  # why it scored 0 ("" when it passed)


@dataclass
class Report:
    notebook: Path
    chapter: str  # the stem of solutions/<chapter>.ipynb
    results: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    executed: nbformat.NotebookNode | None = None  # what ran, with its outputs

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results if r.passed)

    @property
    def max_score(self) -> float:
        return sum(r.points for r in self.results)


def _info(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _text(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _same(a: str, b: str) -> bool:
    """Equal but for trailing whitespace on lines and blank lines at the ends."""
    def norm(text):
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())
    return norm(a) == norm(b)


def find_chapter(path: Path, nb: dict, root: Path, chapter: str | None = None
                 ) -> str:
    """The stem of the course notebook ``nb`` was handed out from: ``chapter``
    if given, else the file's own name, else what its metadata says."""
    solutions = root / "solutions"
    if chapter:
        stem = Path(chapter).stem
        if not (solutions / f"{stem}.ipynb").is_file():
            known = ", ".join(p.stem for p in sorted(solutions.glob("*.ipynb")))
            raise GradingError(f"no chapter {stem!r}; known chapters: {known}")
        return stem
    if (solutions / f"{path.stem}.ipynb").is_file():
        return path.stem
    generated = nb.get("metadata", {}).get("course", {}).get("generated_from", "")
    if generated and (root / generated).is_file():
        return Path(generated).stem
    for cell in nb.get("cells", []):
        match = GRADE_ID.match(str(_info(cell).get("grade_id", "")))
        if match and (solutions / f"{match['stem']}.ipynb").is_file():
            return match["stem"]
    raise GradingError(f"{path}: cannot tell which chapter this is (neither its "
                       "name, its metadata nor its cells say); pass --chapter")


def _learner_cell_tampers(source: str) -> str:
    """The first line of a learner's cell that rebinds or patches ``checks``
    (or reaches into ``utils.checks``), as ``"line N"``; "" when none does."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)  # %magics, !shell
    except ImportError:
        pass
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    for node in ast.walk(tree):
        bad = False
        if isinstance(node, ast.Name) and node.id == "checks":
            bad = not isinstance(node.ctx, ast.Load)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            bad = node.value.id == "checks" and not isinstance(node.ctx, ast.Load)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bad = node.name == "checks"
        elif isinstance(node, ast.alias):
            bad = "checks" in (node.asname, node.name) or \
                node.name.startswith("utils.checks")
        elif isinstance(node, ast.ImportFrom):
            bad = (node.module or "").startswith("utils.checks")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bad = "checks" in node.names
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            bad = node.value == "checks" or "utils.checks" in node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            bad = node.func.id in ("setattr", "delattr") and node.args and \
                isinstance(node.args[0], ast.Name) and node.args[0].id == "checks"
        if bad:
            return f"line {getattr(node, 'lineno', '?')}"
    return ""


def compare(course: dict, submission: dict) -> tuple[dict[str, str], dict[str, int],
                                                     list[str]]:
    """Match the course's check cells in ``submission`` (both notebooks carry
    nbgrader metadata; ``course`` is the solution notebook's).

    Returns ``(problems, positions, notes)``: for each of the course's check
    grade ids either a problem (why it scores 0) or the index of the
    submission's cell to grade; and notes on what else was odd.
    """
    cells = submission["cells"]
    by_id: dict[str, list[int]] = {}
    for index, cell in enumerate(cells):
        grade_id = _info(cell).get("grade_id")
        if grade_id:
            by_id.setdefault(str(grade_id), []).append(index)
    problems, positions, notes = {}, {}, []
    exercises_before: list[str] = []  # the course's exercise ids so far
    course_checks = set()
    for cell in course["cells"]:
        info = _info(cell)
        if info.get("solution"):
            exercises_before.append(info["grade_id"])
        if not info.get("grade"):
            continue
        grade_id = info["grade_id"]
        course_checks.add(grade_id)
        found = by_id.get(grade_id, [])
        same = [i for i in found if cells[i].get("cell_type") == "code"
                and _same(_text(cells[i]), _text(cell))]
        if not found:
            problems[grade_id] = "missing: the submission has no check cell with " \
                                 "this grade id (deleted, or its metadata lost)"
        elif not same:
            problems[grade_id] = "edited: the check cell differs from the course's"
        else:
            index = same[0]
            late = [e for e in exercises_before if any(i > index for i in
                                                       by_id.get(e, []))]
            if late:
                problems[grade_id] = f"moved: the check cell comes before {late[0]}, " \
                                     "which it checks"
            else:
                positions[grade_id] = index
            if len(found) > 1:
                notes.append(f"{grade_id} appears {len(found)} times; cell {index} "
                             "is graded")
    for index, cell in enumerate(cells):
        info = _info(cell)
        if info.get("grade") and info.get("grade_id") not in course_checks:
            notes.append(f"cell {index} calls itself graded ({info.get('grade_id')}) "
                         "but the course's notebook has no such check: ignored")
    graded = set(positions.values())
    setup = next((_text(c) for c in course["cells"]
                  if str(_info(c).get("grade_id", "")).endswith("-setup")), None)
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code" or index in graded:
            continue
        if setup is not None and _same(_text(cell), setup):  # the course's own
            continue
        where = _learner_cell_tampers(_text(cell))
        if where:
            for grade_id, pos in list(positions.items()):
                if pos > index:
                    problems[grade_id] = f"tampered: cell {index} ({where}) " \
                                         "rebinds or patches the checks"
                    del positions[grade_id]
    return problems, positions, notes


def _restore_setup(course: dict, nb: dict) -> str:
    """Put the course's setup cell into ``nb`` (in place); a note if needed."""
    setup = next((c for c in course["cells"]
                  if str(_info(c).get("grade_id", "")).endswith("-setup")), None)
    if setup is None:
        return ""
    grade_id = _info(setup)["grade_id"]
    for cell in nb.cells:
        if _info(cell).get("grade_id") == grade_id and cell.cell_type == "code":
            if _same(_text(cell), _text(setup)):
                return ""
            cell.source = _text(setup)
            return "the setup cell differed from the course's: the course's was run"
    cell = nbformat.v4.new_code_cell(_text(setup))
    cell.metadata["nbgrader"] = dict(_info(setup))
    first = next((i for i, c in enumerate(nb.cells)
                  if _info(c).get("solution") or _info(c).get("grade")), 0)
    nb.cells.insert(first, cell)
    return "the setup cell was missing: the course's was run"


def grade(path, chapter: str | None = None, root: Path = ROOT, timeout: int = 300,
          env: dict | None = None) -> Report:
    """Grade the notebook at ``path`` (see the module docstring). ``timeout`` is
    per cell; ``env`` adds to the kernel's environment (``COURSE_ROOT`` is
    ``root`` unless it says otherwise)."""
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several kinds
        raise GradingError(f"{path} is not a notebook: {err}") from None
    stem = find_chapter(path, nb, Path(root), chapter)
    try:
        course = with_nbgrader_metadata(read(Path(root) / "solutions" /
                                             f"{stem}.ipynb"), stem)
    except NotebookError as err:
        raise GradingError(str(err)) from None
    report = Report(path, stem)
    nb = copy.deepcopy(nb)
    note = _restore_setup(course, nb)
    if note:
        report.notes.append(note)
    problems, positions, notes = compare(course, nb)
    report.notes += notes
    for cell in nb.cells:  # nothing the learner's file says about a run counts
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            tags = cell.metadata.get("tags", [])
            if _info(cell).get("grade") or _info(cell).get("locked"):
                cell.metadata["tags"] = [t for t in tags if t != "skip-execution"]
    status: dict[int, str] = {}
    if positions:
        nb.cells = nb.cells[: max(positions.values()) + 1]
        execution = run(nb, path, allow_errors=True, timeout=timeout,
                        env={"COURSE_ROOT": str(root), **(env or {})})
        status = execution.status
        report.executed = nb
        if execution.error:
            report.notes.append(f"the run stopped early: {execution.error}")
    for cell in course["cells"]:
        info = _info(cell)
        if not info.get("grade"):
            continue
        grade_id, points = info["grade_id"], float(info.get("points", 1))
        if grade_id in problems:
            report.results.append(CheckResult(grade_id, points, False,
                                              problems[grade_id]))
            continue
        index = positions[grade_id]
        report.results.append(CheckResult(
            grade_id, points, status.get(index) == "ok",
            _failure(nb.cells[index], status.get(index))))
    return report


def _failure(cell, status: str | None) -> str:
    """Why a check cell that ran failed ("" if it passed)."""
    if status is None:
        return "not run"
    if status == "ok":
        return ""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            name, lines = output.get("ename", "Error"), \
                str(output.get("evalue", "")).strip().splitlines() or [""]
            # A check's first line says what failed (its hints follow); any
            # other error (a missing utils/, say) is given whole.
            text = lines[0] if name == "CheckFailed" else " ".join(
                line.strip() for line in lines)
            text = text if len(text) <= 240 else text[:240] + " ..."
            return f"{name}: {text}".rstrip(": ")
    return "failed (no error shown)"
