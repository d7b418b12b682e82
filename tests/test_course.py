import itertools
import json

import pytest

from conftest import ROOT
from utils.course import notebooks as nbs
from utils.course.execute import grade


def notebook(cells):
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


IDS = (f"cell-{n}" for n in itertools.count())


def code(source, count=None, outputs=()):
    return {
        "cell_type": "code",
        "source": source,
        "metadata": {},
        "id": next(IDS),
        "execution_count": count,
        "outputs": list(outputs),
    }


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


def test_student_version_replaces_regions_and_strips_outputs():
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
    check = student["cells"][2]["metadata"]["nbgrader"]
    assert check["grade"] is True and check["points"] == 1 and check["locked"]
    assert SOLVED["cells"][1]["execution_count"] == 1, "the input is not modified"


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
    root = make_root(tmp_path, SOLVED)
    changed = nbs.build(root)
    assert (root / "chapters" / "99_test.ipynb") in changed
    assert nbs.check(root) == []
    assert nbs.build(root) == [], "a second build changes nothing"


def test_check_finds_stale_chapters_and_unexecuted_solutions(tmp_path):
    root = make_root(tmp_path, SOLVED)
    nbs.build(root)
    sol = root / "solutions" / "99_test.ipynb"
    nb = json.loads(sol.read_text())
    nb["cells"][1]["source"] = "".join(nb["cells"][1]["source"]) + "# changed\n"
    nb["cells"][2]["execution_count"] = 5
    sol.write_text(nbs.dumps(nb))
    (root / "chapters" / "00_orphan.ipynb").write_text("{}")
    problems = "\n".join(nbs.check(root))
    assert "chapters/99_test.ipynb is stale" in problems
    assert "execution counts are [1, 5, 3], expected 1..3" in problems
    assert "chapters/00_orphan.ipynb has no solutions" in problems


def test_the_repository_notebooks_are_consistent():
    assert nbs.check(ROOT) == []


def test_grade_scores_check_cells(tmp_path):
    nb = notebook(
        [
            code(
                "class checks:\n"
                "    def check_double(f):\n"
                "        assert f(2) == 4\n        print('ok')\n"
                "    def check_half(f):\n        assert f(4) == 2\n"
            ),
            code("def double(x):\n    return x + x\n"),
            code("checks.check_double(double)\n"),
            code(
                "def half(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
            ),
            code("checks.check_half(half)\n"),
        ]
    )
    nb["metadata"]["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "submission.ipynb"
    path.write_text(json.dumps(nb))
    results = grade(path)
    assert [(gid, passed) for gid, passed, _ in results] == [
        ("submission-check-1", True),
        ("submission-check-2", False),
    ]
    assert results[1][2].startswith("NotImplementedError")


def test_grade_a_submission_outside_the_repository(tmp_path):
    """A teacher grades submissions wherever they are (nbgrader's autograded/
    folders, an e-mail attachment): the notebook still finds the course."""
    submission = tmp_path / "student_01.ipynb"
    submission.write_text((ROOT / "solutions/01_metrics_and_losses.ipynb").read_text())
    results = grade(submission)
    assert len(results) >= 4
    assert all(passed for _, passed, _ in results), results
