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

import ast
import copy
import json
import re
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CHECK_CALL = re.compile(r"^\s*checks\.\w+\(", re.MULTILINE)
# Code handed out in a hint: a call with arguments, an assignment, a slice
# with None. Naming a function or an argument is fine.
CODE_LIKE = re.compile(r"[\w\]]\([^()]*[,=]|\w = |\.copy_\(|\[:, None\]|\[None, :\]")
HINT = re.compile(r"\*Hint[^*]*\*:?(.*?)(?:\n\n|$)", re.DOTALL)
SETUP_IMPORT = re.compile(r"^\s*from utils\.checks import \w+ as checks\b",
                          re.MULTILINE)
# The start of every chapter's setup cell ({module}: ch00, ch01, ...). It must
# work without the course: if utils/ cannot be imported, ``checks`` becomes a
# stand-in whose every check raises the cause, so that each check cell (which
# nbgrader shows and grades) names it too.
SETUP_PREAMBLE = """\
import os, pathlib, sys  # noqa: E401

# The course's utils/: at COURSE_ROOT, else in this folder or one above it.
# Without it, this cell and every check cell below say why.
ROOT = os.environ.get("COURSE_ROOT") or next(
    (str(p) for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents]
     if (p / "utils" / "checks").is_dir()), "")
sys.path.insert(0, ROOT)
try:
    from utils.checks import {module} as checks
except Exception as err:
    class NoCourse:  # stands in for the checks: each one raises the cause
        cause = ("the course's utils/ could not be imported.\\n"
                 "Open this notebook inside the course's folder, or set COURSE_ROOT "
                 f"to it.\\n({{err}}; looked in {{ROOT or 'this folder and above'}})")

        def __getattr__(self, name):
            raise ModuleNotFoundError(self.cause)

    checks = NoCourse()
    raise ModuleNotFoundError(checks.cause) from None
"""
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


def cell_kind(cell) -> str:
    """``"exercise"``, ``"check"``, ``"setup"`` or ``""`` (see the module
    docstring); the first setup-like cell of a notebook is its setup cell."""
    text = _source(cell)
    if BEGIN in text:
        return "exercise"
    if cell["cell_type"] == "code" and CHECK_CALL.search(text):
        return "check"
    if cell["cell_type"] == "code" and SETUP_IMPORT.search(text):
        return "setup"
    return ""


def with_nbgrader_metadata(nb: dict, stem: str) -> dict:
    """A copy of ``nb`` whose exercise cells are nbgrader solution cells, whose
    check cells are graded, locked, one-point test cells, and whose setup cell
    is a locked read-only cell (nbgrader restores its source when grading)."""
    nb = copy.deepcopy(nb)
    exercise = check = 0
    setup_seen = False
    for cell in nb["cells"]:
        meta = cell.setdefault("metadata", {})
        meta.pop("nbgrader", None)
        kind = cell_kind(cell)
        common = {"schema_version": 3, "task": False}
        if kind == "exercise":
            exercise += 1
            meta["nbgrader"] = {"grade": False, "grade_id": f"{stem}-exercise-"
                                f"{exercise}", "locked": False, "solution": True,
                                **common}
        elif kind == "check":
            check += 1
            meta["nbgrader"] = {"grade": True, "grade_id": f"{stem}-check-{check}",
                                "locked": True, "points": 1, "solution": False,
                                **common}
        elif kind == "setup" and not setup_seen:
            setup_seen = True
            meta["nbgrader"] = {"grade": False, "grade_id": f"{stem}-setup",
                                "locked": True, "solution": False, **common}
        if "nbgrader" in meta:
            meta["nbgrader"] = dict(sorted(meta["nbgrader"].items()))
    return nb


def _lock(cell) -> None:
    """Jupyter's own locks, as nbgrader's release sets them: a locked cell can
    be neither edited nor deleted, a solution cell not deleted."""
    meta = cell.get("metadata", {})
    info = meta.get("nbgrader", {})
    if info.get("locked"):
        meta["editable"] = False
        meta["deletable"] = False
    elif info.get("solution"):
        meta["deletable"] = False


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
        _lock(cell)
    first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if first is not None:
        _set_source(first, GENERATED.format(name=name) + _source(first))
    nb.setdefault("metadata", {})["course"] = {
        "generated_from": f"solutions/{name}",
        "generated_by": "python -m utils.course build",
    }
    return nb


def check_module(stem: str) -> str:
    """The check module of a chapter: ``ch03`` for ``03_fcn``."""
    return f"ch{stem[:2]}"


def conventions(nb: dict, stem: str) -> list[str]:
    """How ``nb`` (a solution notebook named ``stem``) breaks the rules of the
    module docstring that the tooling can see without running it."""
    problems = []
    kinds = [cell_kind(cell) for cell in nb["cells"]]
    defined_by_exercises = set()
    for cell, kind in zip(nb["cells"], kinds):
        if kind == "exercise" and cell["cell_type"] == "code":
            defined_by_exercises |= _defined_names(_source(cell))
    if "check" in kinds:
        if "setup" not in kinds:
            problems.append("no setup cell (the cell that imports the checks)")
        else:
            setup = _source(nb["cells"][kinds.index("setup")])
            preamble = SETUP_PREAMBLE.format(module=check_module(stem))
            if not setup.startswith(preamble):
                problems.append(
                    "the setup cell does not begin with the course's setup preamble "
                    f"(utils/course/notebooks.py, SETUP_PREAMBLE, module "
                    f"{check_module(stem)}): copy it from solutions/03_fcn.ipynb")
    for index, (cell, kind) in enumerate(zip(nb["cells"], kinds)):
        if cell["cell_type"] == "markdown" and index + 1 < len(kinds) and \
                kinds[index + 1] == "exercise":
            for hint in HINT.findall(_source(cell)):
                if looks_like_code(hint):
                    problems.append(f"cell {index}: the exercise's hint hands out "
                                    f"code ({hint.strip()[:60]!r}...); give the "
                                    "idea, not the code")
        if kind != "check":
            continue
        where = f"cell {index}"
        try:
            tree = ast.parse(_source(cell))
        except SyntaxError as err:
            problems.append(f"{where}: a check cell that does not parse ({err.msg})")
            continue
        for stmt in tree.body:
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if not (isinstance(call, ast.Call) and _is_checks_attr(call.func)):
                problems.append(f"{where}: a check cell holds only checks.* calls "
                                f"(line {stmt.lineno} is something else)")
                continue
            names = {_root_name(arg) for arg in [*call.args, *(
                k.value for k in call.keywords)]} - {None}
            if not names & defined_by_exercises:
                problems.append(
                    f"{where}: {ast.unparse(call)} tests "
                    f"{', '.join(sorted(names)) or 'nothing'}, which no exercise "
                    "cell defines; a graded check tests what the learner writes "
                    "(pin given code to its canonical copy with "
                    "utils.checks.common.assert_same_model instead)")
    return problems


def looks_like_code(text: str) -> bool:
    """Whether a hint hands out code (see ``CODE_LIKE``)."""
    return bool(CODE_LIKE.search(text))


def _is_checks_attr(node) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
        and node.value.id == "checks"


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _defined_names(source: str) -> set[str]:
    """Names a cell binds at its top level (def, class, assignment, import)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


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

    - every solution follows the conventions of the module docstring
      (:func:`conventions`);
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
        problems += [f"{rel}, {p}" for p in conventions(solution, sol_path.stem)]
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
