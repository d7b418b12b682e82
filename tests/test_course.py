"""The notebook tooling (utils/course): chapters built from solutions, the
conventions checked, and the grader, which scores a submission against the
course's own check cells and cannot be fooled by editing, deleting, moving or
bypassing them.

Grading runs real kernels, so it is tested on a tiny synthetic chapter (one
kernel per kind of submission) and on the blank release of every chapter in
solutions/ (which must score 0: no free points), plus the solved chapter 01.
"""

import copy
import importlib
import itertools
import json
import re
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from utils.course import notebooks as nbs
from utils.course.__main__ import main
from utils.course.grade import GradingError, compare, find_chapter, grade


def notebook(cells):
    return {"cells": cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}


IDS = (f"cell-{n}" for n in itertools.count())


def code(source, count=None, outputs=()):
    return {"cell_type": "code", "source": source, "metadata": {}, "id": next(IDS),
            "execution_count": count, "outputs": list(outputs)}


def markdown(source):
    return {"cell_type": "markdown", "source": source, "metadata": {}, "id": next(IDS)}


SOLVED = notebook(
    [
        markdown("# 99 · Test\n"),
        code(
            "def f(x):\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n"
            "    ### END SOLUTION\n",
            1,
        ),
        code(
            "checks.check_f(f)\n",
            2,
            [{"output_type": "stream", "name": "stdout", "text": "✓ f\n"}],
        ),
        markdown("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION\n"),
        code(
            "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n"
            "### END HIDDEN TESTS\n",
            3,
        ),
    ]
)


def test_student_version_replaces_regions_strips_outputs_and_locks():
    student = nbs.student_version(SOLVED, "99_test.ipynb")
    sources = ["".join(c["source"]) for c in student["cells"]]
    assert sources[1] == (
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    assert "YOUR ANSWER HERE" in sources[3] and "Because" not in sources[3]
    assert "f(2) == 3" not in sources[4] and "f(1) == 2" in sources[4]
    assert "Generated from solutions/99_test.ipynb" in sources[0]
    for cell in student["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    assert student["cells"][1]["metadata"]["nbgrader"]["solution"] is True
    assert student["cells"][1]["metadata"]["deletable"] is False
    assert "editable" not in student["cells"][1]["metadata"]
    check = student["cells"][2]["metadata"]
    assert check["nbgrader"]["grade"] is True and check["nbgrader"]["points"] == 1
    assert check["nbgrader"]["locked"] is True
    assert check["editable"] is False and check["deletable"] is False
    assert SOLVED["cells"][1]["execution_count"] == 1, "the input is not modified"
    assert "editable" not in nbs.with_nbgrader_metadata(SOLVED, "99_test")[
        "cells"][2]["metadata"], "solutions stay editable for their authors"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "chapters").glob(
    "*.ipynb")))
def test_chapters_lock_their_check_and_setup_cells(name):
    nb = json.loads((ROOT / "chapters" / name).read_text())
    kinds = [nbs.cell_kind(c) for c in nb["cells"]]
    assert "check" in kinds and "setup" in kinds
    for cell, kind in zip(nb["cells"], kinds):
        meta = cell["metadata"]
        if kind in ("check", "setup"):
            assert meta["nbgrader"]["locked"] is True
            assert meta["editable"] is False and meta["deletable"] is False


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "nested"),
    ],
)
def test_broken_markers_are_reported(source, message):
    with pytest.raises(nbs.NotebookError, match=message):
        nbs.student_version(notebook([code(source)]), "x.ipynb")


def make_root(tmp_path, nb):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "99_test.ipynb").write_text(json.dumps(nb))
    return tmp_path


def test_build_then_check_is_clean(tmp_path):
    root = make_root(tmp_path, COURSE)
    changed = nbs.build(root)
    assert (root / "chapters" / "99_test.ipynb") in changed
    assert nbs.check(root) == []
    assert nbs.build(root) == [], "a second build changes nothing"


def test_check_finds_stale_chapters_and_unexecuted_solutions(tmp_path):
    root = make_root(tmp_path, COURSE)
    nbs.build(root)
    sol = root / "solutions" / "99_test.ipynb"
    nb = json.loads(sol.read_text())
    nb["cells"][2]["source"] = "".join(nb["cells"][2]["source"]) + "# changed\n"
    nb["cells"][3]["execution_count"] = 9
    sol.write_text(nbs.dumps(nb))
    (root / "chapters" / "00_orphan.ipynb").write_text("{}")
    problems = "\n".join(nbs.check(root))
    assert "chapters/99_test.ipynb is stale" in problems
    assert "execution counts are [1, 9, 3, 4, 5, 6, 7, 8], expected 1..8" in problems
    assert "chapters/00_orphan.ipynb has no solutions" in problems


def test_conventions_catch_free_points_and_an_old_setup_cell():
    nb = copy.deepcopy(COURSE)
    given = code("def given(x):\n    return x\n")
    nb["cells"][3:3] = [given, code("checks.check_double(given)\n")]
    nb["cells"][1]["source"] = "import sys\nfrom utils.checks import ch99 as checks\n"
    problems = "\n".join(nbs.conventions(nb, "99_test"))
    assert "checks.check_double(given) tests given, which no exercise cell " \
           "defines" in problems
    assert "the setup cell does not begin with the course's setup preamble" in problems
    nb["cells"][4]["source"] = "checks.check_double(double)\nprint('done')\n"
    assert "holds only checks.* calls" in "\n".join(nbs.conventions(nb, "99_test"))


def test_the_repository_notebooks_are_consistent():
    assert nbs.check(ROOT) == []


# --- the grader, on a synthetic chapter -----------------------------------

REF99 = '''
"""The canonical code of the synthetic chapter 99 (tests/test_course.py)."""


def reference_double(x):
    return 2 * x


def reference_half(x):
    return x // 2
'''

CH99 = '''
"""Checks of the synthetic chapter 99 (tests/test_course.py)."""
import numpy as np

from utils.checks.common import assert_equal, exercise, learner, ok
from utils.ref99 import reference_double, reference_half


@exercise(forbid=[reference_double], hints=["add the number to itself", "x plus x"])
def check_double(fn):
    for x in (0, 3, -5):
        got = learner(fn, x, what=f"double({x})")
        assert_equal(np.asarray(got), np.asarray(reference_double(x)), f"double({x})")
    ok("double doubles")


@exercise(forbid=[reference_half], hints=["integer division", "by two"])
def check_half(fn):
    for x in (0, 4, 9):
        got = learner(fn, x, what=f"half({x})")
        assert_equal(np.asarray(got), np.asarray(reference_half(x)), f"half({x})")
    ok("half halves")


@exercise(forbid=[abs], hints=["the sign", "flip negatives"])
def check_magnitude(fn):
    for x in (0, 4, -9):
        got = learner(fn, x, what=f"magnitude({x})")
        assert_equal(np.asarray(got), np.asarray(abs(x)), f"magnitude({x})")
    ok("magnitude is |x|")
'''


def exercise_cell(name, body):
    return code(f"def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n"
                "    ### END SOLUTION\n")


COURSE = notebook([
    markdown("# 99 · A synthetic chapter\n"),
    code(nbs.SETUP_PREAMBLE.format(module="ch99") + 'print("ready")\n'),
    markdown("Exercise 1: double.\n"),
    exercise_cell("double", "return x + x"),
    code("checks.check_double(double)\n"),
    markdown("Exercise 2: half.\n"),
    exercise_cell("half", "return x // 2"),
    code("checks.check_half(half)\n"),
    exercise_cell("magnitude", "return x if x >= 0 else -x"),
    code("checks.check_magnitude(magnitude)\n"),
    code("import time\ntime.sleep(600)  # after the last check: never run\n"),
])
for _n, _cell in enumerate(c for c in COURSE["cells"] if c["cell_type"] == "code"):
    _cell["execution_count"] = _n + 1


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course root whose utils/ is this repository's plus checks/ch99.py."""
    root = tmp_path_factory.mktemp("course")
    (root / "utils" / "checks").mkdir(parents=True)
    (root / "utils" / "__init__.py").write_text(
        f"__path__.append({str(ROOT / 'utils')!r})\n")
    (root / "utils" / "checks" / "__init__.py").write_text(
        f"__path__.append({str(ROOT / 'utils' / 'checks')!r})\n")
    (root / "utils" / "checks" / "ch99.py").write_text(textwrap.dedent(CH99))
    (root / "utils" / "ref99.py").write_text(textwrap.dedent(REF99))
    (root / "solutions").mkdir()
    course_nb = nbs.with_nbgrader_metadata(COURSE, "99_test")
    (root / "solutions" / "99_test.ipynb").write_text(nbs.dumps(course_nb))
    return root


def solved():
    return nbs.with_nbgrader_metadata(COURSE, "99_test")


def blank():
    return nbs.student_version(COURSE, "99_test.ipynb")


def index_of(nb, grade_id):
    return next(i for i, c in enumerate(nb["cells"])
                if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def write(tmp_path, nb, name="99_test.ipynb"):
    folder = tmp_path / "submission"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(nbs.dumps(nb))
    return path


def scores(report):
    return {r.grade_id.split("-", 1)[1]: (r.passed, r.message)
            for r in report.results}


def test_compare_finds_every_kind_of_tampering():
    course = solved()
    cases = {}
    nb = solved()
    nb["cells"][index_of(nb, "99_test-check-1")]["source"] = "pass\n"
    cases["a check replaced by pass"] = (nb, "99_test-check-1", "edited")
    nb = solved()
    nb["cells"][index_of(nb, "99_test-check-1")]["source"] = \
        "checks.check_double(lambda x: 2 * x)\n"
    cases["a check pointed at other code"] = (nb, "99_test-check-1", "edited")
    nb = solved()
    del nb["cells"][index_of(nb, "99_test-check-2")]
    cases["a deleted check"] = (nb, "99_test-check-2", "missing")
    nb = solved()
    del nb["cells"][index_of(nb, "99_test-check-2")]["metadata"]["nbgrader"]
    cases["a check without its metadata"] = (nb, "99_test-check-2", "missing")
    nb = solved()
    check = nb["cells"].pop(index_of(nb, "99_test-check-3"))
    nb["cells"].insert(index_of(nb, "99_test-exercise-3"), check)
    cases["a check moved above its exercise"] = (nb, "99_test-check-3", "moved")
    nb = solved()
    nb["cells"].insert(2, code("class Fake:\n    def __getattr__(self, name):\n"
                               "        return lambda *a: None\nchecks = Fake()\n"))
    cases["checks rebound"] = (nb, "99_test-check-1", "tampered")
    nb = solved()
    nb["cells"].insert(2, code("import utils.checks.ch99 as c\n"
                               "c.check_half = print\n"))
    cases["the check module patched"] = (nb, "99_test-check-2", "tampered")
    nb = solved()
    nb["cells"].insert(2, code("setattr(checks, 'check_double', print)\n"))
    cases["setattr on checks"] = (nb, "99_test-check-1", "tampered")
    nb = solved()
    disguised = code("checks = None\n")
    disguised["metadata"]["nbgrader"] = {"grade_id": "99_test-setup", "locked": True}
    nb["cells"].insert(2, disguised)
    cases["a cell disguised as the setup cell"] = (nb, "99_test-check-1", "tampered")
    for name, (nb, grade_id, word) in cases.items():
        problems, positions, _ = compare(course, nb)
        assert problems.get(grade_id, "").startswith(word), (name, problems)
        assert grade_id not in positions, name

    # What is not tampering: swapped check cells that still follow their
    # exercises, whitespace, a scratch cell that calls a check again.
    nb = solved()
    c1, c2 = index_of(nb, "99_test-check-1"), index_of(nb, "99_test-check-2")
    nb["cells"][c1], nb["cells"][c2] = nb["cells"][c2], nb["cells"][c1]
    nb["cells"].insert(c2, code("checks.check_double(double)  # again\n"))
    nb["cells"][index_of(nb, "99_test-check-3")]["source"] = \
        "checks.check_magnitude(magnitude)   \n\n"
    problems, positions, notes = compare(course, nb)
    assert set(problems) == {"99_test-check-2"}, "check 2 now precedes exercise 2"
    nb = solved()
    extra = code("print('me too')\n")
    extra["metadata"]["nbgrader"] = {"grade": True, "grade_id": "99_test-check-9",
                                     "points": 5}
    nb["cells"].append(extra)
    problems, positions, notes = compare(course, nb)
    assert not problems and len(positions) == 3
    assert any("99_test-check-9" in n and "ignored" in n for n in notes)


def test_find_chapter_by_name_metadata_or_grade_ids(course, tmp_path):
    nb = blank()
    assert find_chapter(Path("99_test.ipynb"), nb, course) == "99_test"
    assert find_chapter(Path("alice.ipynb"), nb, course) == "99_test"  # metadata
    del nb["metadata"]["course"]
    assert find_chapter(Path("alice.ipynb"), nb, course) == "99_test"  # grade ids
    for cell in nb["cells"]:
        cell["metadata"].pop("nbgrader", None)
    with pytest.raises(GradingError, match="pass --chapter"):
        find_chapter(Path("alice.ipynb"), nb, course)
    assert find_chapter(Path("alice.ipynb"), nb, course, "99_test") == "99_test"
    with pytest.raises(GradingError, match="known chapters: 99_test"):
        find_chapter(Path("alice.ipynb"), nb, course, "98_nope")


def test_grade_shortcut_and_correct(course, tmp_path):
    """One kernel: exercise 1 answered by the course's own code, exercise 3 by
    a builtin the exercise forbids, exercise 2 solved; the setup cell edited
    (the course's is run, as nbgrader does) and a scratch cell that runs a
    check again (harmless)."""
    nb = solved()
    nb["cells"][index_of(nb, "99_test-exercise-1")]["source"] = (
        "from utils.ref99 import reference_double\n\n"
        "def double(x):\n    return reference_double(x)  # the course's own\n")
    nb["cells"][index_of(nb, "99_test-exercise-3")]["source"] = \
        "magnitude = abs  # a builtin the exercise forbids\n"
    nb["cells"].insert(index_of(nb, "99_test-check-2") + 1,
                       code("checks.check_half(half)\n"))
    nb["cells"][index_of(nb, "99_test-setup")]["source"] = "checks = None\n"
    report = grade(write(tmp_path, nb, "alice.ipynb"), root=course)
    got = scores(report)
    assert (report.score, report.max_score) == (1, 3), report.results
    assert "your code calls reference_double" in got["check-1"][1]
    assert got["check-2"] == (True, "")
    assert "your code calls abs" in got["check-3"][1], got
    assert any("setup cell differed" in n for n in report.notes)
    assert len(report.executed.cells) == index_of(nb, "99_test-check-3") + 1, \
        "cells after the last check are not run"


def test_grade_blank_scores_zero_and_shows_one_short_message(course, tmp_path):
    report = grade(write(tmp_path, blank()), root=course)
    assert (report.score, report.max_score) == (0, 3)
    for r in report.results:
        assert r.message.startswith("CheckFailed: ") and "not done yet" in r.message
    outputs = [o for c in report.executed.cells for o in c.get("outputs", [])
               if o.get("output_type") == "error"]
    assert len(outputs) == 3
    for out in outputs:  # what Jupyter and nbgrader's feedback show
        text = "\n".join(out["traceback"])
        assert out["ename"] == "CheckFailed" and "Check failed" in text
        assert "not done yet" in text and "hint: " in text
        assert "Traceback" not in text and "File " not in text and \
            "utils/checks" not in text, text
        assert len(out["traceback"]) <= 6


def test_grade_tampered(course, tmp_path):
    nb = solved()
    nb["cells"][index_of(nb, "99_test-check-1")]["source"] = "pass\n"
    del nb["cells"][index_of(nb, "99_test-check-2")]
    check = nb["cells"].pop(index_of(nb, "99_test-check-3"))
    nb["cells"].insert(index_of(nb, "99_test-exercise-3"), check)
    report = grade(write(tmp_path, nb), root=course)
    got = scores(report)
    assert report.score == 0 and report.max_score == 3, "nothing renumbered"
    assert got["check-1"][1].startswith("edited")
    assert got["check-2"][1].startswith("missing")
    assert got["check-3"][1].startswith("moved")
    assert report.executed is None, "nothing left to run"


def test_without_course_root_every_check_names_the_cause(course, tmp_path):
    report = grade(write(tmp_path, solved()), root=course,
                   env={"COURSE_ROOT": None})
    assert report.score == 0
    for r in report.results:
        assert "the course's utils/ could not be imported" in r.message, r.message
        assert "COURSE_ROOT" in r.message
    setup = report.executed.cells[index_of(solved(), "99_test-setup")]
    assert "COURSE_ROOT" in setup["outputs"][0]["evalue"]


def test_cli_exit_codes(course, tmp_path, monkeypatch, capsys):
    from utils.course import grade as grading

    def fake(path, chapter=None, timeout=300):
        report = grading.Report(Path(path), "99_test")
        full = "full" in Path(path).name
        report.results = [grading.CheckResult("99_test-check-1", 1, True, ""),
                          grading.CheckResult("99_test-check-2", 1, full,
                                              "" if full else "edited: ...")]
        return report

    monkeypatch.setattr(grading, "grade", fake)
    full, half = tmp_path / "full.ipynb", tmp_path / "half.ipynb"
    full.write_text("{}")
    half.write_text("{}")
    assert main(["grade", str(full)]) == 0
    assert "score: 2/2" in capsys.readouterr().out
    assert main(["grade", str(full), str(half)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  99_test-check-2  edited: ..." in out and "score: 1/2" in out
    assert main(["grade", str(tmp_path / "nope.ipynb")]) == 2


# --- the grader, on the real chapters --------------------------------------

SOLUTIONS = sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb"))


def graded_cells(name):
    nb = nbs.with_nbgrader_metadata(nbs.read(ROOT / "solutions" / name), name[:-6])
    return [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]


@pytest.mark.parametrize("name", SOLUTIONS)
def test_a_blank_release_scores_zero(name, tmp_path):
    """No free points: every graded check tests what the learner writes."""
    student = nbs.student_version(nbs.read(ROOT / "solutions" / name), name)
    report = grade(write(tmp_path, student, name))
    assert report.max_score == len(graded_cells(name)) > 0
    assert report.score == 0, [r for r in report.results if r.passed]
    for r in report.results:
        assert re.match(r"CheckFailed: .*not done yet", r.message), r.message
    for cell in report.executed.cells:  # one short message, no traceback
        if cell["metadata"].get("nbgrader", {}).get("grade"):
            (error,) = [o for o in cell["outputs"] if o["output_type"] == "error"]
            text = "\n".join(error["traceback"])
            assert "Traceback" not in text and "File " not in text, text


def test_a_solution_graded_outside_the_repository_scores_full(tmp_path):
    """Chapter 01, the cheapest: a teacher grades submissions wherever they
    are (nbgrader's autograded/ folders, an e-mail attachment)."""
    submission = tmp_path / "student_01.ipynb"
    submission.write_text((ROOT / "solutions/01_metrics_and_losses.ipynb").read_text())
    report = grade(submission)
    assert report.chapter == "01_metrics_and_losses"
    assert report.max_score == 4 and report.score == 4, report.results


@pytest.mark.parametrize("name", SOLUTIONS)
def test_exercise_text_does_not_name_the_reference(name):
    """Answers one import away: the Markdown above an exercise does not point
    at the code its check refuses (utils.data.formats.colorize, ...)."""
    stem = name[:-6]
    nb = nbs.read(ROOT / "solutions" / name)
    module = importlib.import_module(f"utils.checks.{nbs.check_module(stem)}")
    cells = nb["cells"]
    for index, cell in enumerate(cells):
        if nbs.cell_kind(cell) != "check":
            continue
        called = re.findall(r"checks\.(\w+)\(", nbs._source(cell))
        forbidden = [obj for c in called for obj in getattr(module, c).forbid]
        names = set()
        for obj in forbidden:  # utils.metrics.confusion.confusion_matrix, and
            module_parts = obj.__module__.split(".")  # as its package exports it
            for mod in (module_parts, module_parts[:-1]):
                parts = [*mod, *obj.__qualname__.split(".")]
                names |= {".".join(parts[k:]) for k in range(len(parts) - 1)}
        start = index
        while start > 0 and nbs.cell_kind(cells[start - 1]) != "check":
            start -= 1
        text = "".join(nbs._source(c) for c in cells[start:index]
                       if c["cell_type"] == "markdown")
        named = sorted(n for n in names if "." in n and n in text)
        assert not named, f"{name}, the exercise above cell {index} names {named}"
