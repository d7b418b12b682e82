"""The teacher's round trip through nbgrader, run end to end on the chapters.

Needs a Python with nbgrader 0.9 installed (nbgrader is NOT a dependency of
the course; install it in an environment of its own) and, for the course's own
grader, the course's Python::

    /path/to/nbgrader-env/bin/python teaching/nbgrader_roundtrip.py \\
        --course-python .venv/bin/python [03_fcn ...]

For each chapter it makes an nbgrader course folder (with
teaching/nbgrader_config.py), releases the chapter with
``nbgrader generate_assignment``, submits four notebooks built from the
release (blank; correct; tampered: check 1 replaced by ``pass`` and check 2
deleted; shortcut: exercise 1 answered with the course's own code) and a
solved copy of chapters/ instead of the release, runs
``nbgrader autograde`` and ``nbgrader generate_feedback``, grades the same
files with ``python -m utils.course grade``, and prints both scores. It also
runs ``nbgrader validate`` on the correct submission without COURSE_ROOT, and
looks at the feedback HTML of the blank one (one short message per failing
check, no traceback). Expect minutes per chapter: nbgrader runs every cell.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Exercise 1 of each chapter answered with the course's own implementation:
# what issue 10 found scoring full marks. The checks must refuse it.
SHORTCUTS = {
    "00_introduction": "def colorize(label, palette):\n"
                       "    return formats.colorize(label, palette)\n",
    "01_metrics_and_losses": "from utils.metrics import confusion_matrix as "
                             "confusion_matrix_bincount\n",
    "02_patch_classification": "sliding_window = patch_cnn.sliding_window\n",
    "03_fcn": "from utils.models.upsampling import bilinear_kernel\n",
}


def info(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def by_id(nb, grade_id):
    return next(i for i, c in enumerate(nb["cells"]) if info(c).get("grade_id")
                == grade_id)


def solved(handout: dict, solution: dict) -> dict:
    """``handout`` with every exercise cell as the solution has it."""
    nb = copy.deepcopy(handout)
    for cell in solution["cells"]:
        if info(cell).get("solution"):
            nb["cells"][by_id(nb, info(cell)["grade_id"])]["source"] = cell["source"]
    return nb


def submissions(release: dict, chapter: dict, solution: dict, stem: str
                ) -> dict[str, dict]:
    correct = solved(release, solution)
    tampered = copy.deepcopy(correct)
    tampered["cells"][by_id(tampered, f"{stem}-check-1")]["source"] = "pass"
    del tampered["cells"][by_id(tampered, f"{stem}-check-2")]
    shortcut = copy.deepcopy(correct)
    shortcut["cells"][by_id(shortcut, f"{stem}-exercise-1")]["source"] = \
        SHORTCUTS.get(stem, "pass\n")
    return {"blank": copy.deepcopy(release), "correct": correct,
            "tampered": tampered, "shortcut": shortcut,
            # chapters/ instead of nbgrader's release, solved: nbgrader takes it
            "chapters": solved(chapter, solution)}


def sh(args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{done.stdout}\n"
                         f"{done.stderr}")
    return done


def roundtrip(stem: str, work: Path, course_python: str | None,
              timeout: int | None = None) -> list[str]:
    nbgrader = [sys.executable, "-m", "nbgrader"]
    limit = [f"--Execute.timeout={timeout}"] if timeout else []
    # nbgrader runs its environment's alembic and jupyter by name: as if the
    # environment were activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "COURSE_ROOT": str(REPO)}
    assignment = f"ps{stem[:2]}"
    shutil.copy(REPO / "teaching" / "nbgrader_config.py", work / "nbgrader_config.py")
    (work / "source" / assignment).mkdir(parents=True)
    shutil.copy(REPO / "solutions" / f"{stem}.ipynb", work / "source" / assignment)
    sh(nbgrader + ["generate_assignment", assignment, "--force"], work, env)
    release = json.loads((work / "release" / assignment / f"{stem}.ipynb").read_text())
    solution = json.loads((REPO / "solutions" / f"{stem}.ipynb").read_text())
    chapter = json.loads((REPO / "chapters" / f"{stem}.ipynb").read_text())
    lines = []
    same = [("".join(a["source"]) == "".join(b["source"]))
            for a, b in zip(release["cells"], chapter["cells"])]
    lines.append(f"{stem}: release vs chapters/: {sum(same)} of {len(same)} cells "
                 "identical (the first differs by the 'generated' note)")
    kinds = submissions(release, chapter, solution, stem)
    for student, nb in kinds.items():
        folder = work / "submitted" / student / assignment
        folder.mkdir(parents=True)
        (folder / f"{stem}.ipynb").write_text(json.dumps(nb))
    sh(nbgrader + ["autograde", assignment, "--force", *limit], work, env)
    sh(nbgrader + ["generate_feedback", assignment, "--force"], work, env)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gb:
        for student in kinds:
            sub = gb.find_submission(assignment, student)
            ours = ""
            if course_python:
                done = sh([course_python, "-m", "utils.course", "grade", "--chapter",
                           stem, *(["--timeout", str(timeout)] if timeout else []),
                           str(work / "submitted" / student / assignment /
                                     f"{stem}.ipynb")], REPO, check=False)
                found = re.findall(r"score: (\S+)", done.stdout)
                ours = f"   utils.course grade {found[-1] if found else '?'}"
            lines.append(f"  {student:9s} nbgrader {sub.score:g}/{sub.max_score:g}"
                         f"{ours}")
    html = (work / "feedback" / "blank" / assignment / f"{stem}.html").read_text()
    graded = json.loads((work / "autograded" / "blank" / assignment /
                         f"{stem}.ipynb").read_text())
    errors = [o for c in graded["cells"] if info(c).get("grade")
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    long = [o for o in errors if "most recent call last" in "".join(o["traceback"])]
    lines.append(f"  blank, as graded: {len(errors)} failing check cells, "
                 f"{len(long)} with a traceback; the feedback HTML shows "
                 f"{html.count('Check failed')} 'Check failed' messages")
    bare = {k: v for k, v in env.items() if k != "COURSE_ROOT"}
    elsewhere = work / "validate"
    elsewhere.mkdir()
    target = elsewhere / f"{stem}.ipynb"
    target.write_text(json.dumps(kinds["correct"]))
    done = sh(nbgrader + ["validate", str(target), *limit], elsewhere, bare,
              check=False)
    said = "could not be imported" in done.stdout + done.stderr
    lines.append(f"  validate without COURSE_ROOT names the cause: {said}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="default: every solution")
    parser.add_argument("--course-python", help="the course's Python, to compare "
                        "with python -m utils.course grade")
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    parser.add_argument("--timeout", type=int, help="seconds per cell, instead of "
                        "the config's (for a machine too busy for 300 s)")
    args = parser.parse_args()
    stems = args.chapters or [p.stem for p in sorted((REPO / "solutions").glob(
        "*.ipynb"))]
    for stem in stems:
        if args.keep:
            work = args.keep / stem
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            lines = roundtrip(stem, work, args.course_python, args.timeout)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                lines = roundtrip(stem, Path(tmp), args.course_python, args.timeout)
        print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
