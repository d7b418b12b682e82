"""Command line of :mod:`utils.course` (see its docstring)."""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.course",
        description="Build, check, execute and grade the course's notebooks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="regenerate chapters/ from solutions/")
    sub.add_parser(
        "check", help="fail if chapters/ is stale or a solution is not executed 1..n"
    )
    ex = sub.add_parser("execute", help="run solutions in the ci profile, in place")
    ex.add_argument(
        "notebooks", nargs="*", type=Path, help="default: every solutions/*.ipynb"
    )
    gr = sub.add_parser(
        "grade", help="score submitted notebooks against the course's check cells")
    gr.add_argument("notebooks", nargs="+", type=Path)
    gr.add_argument("--chapter", help="the chapter handed out, e.g. 03_fcn "
                    "(default: from the file's name or its metadata)")
    gr.add_argument("--timeout", type=int, default=300,
                    help="seconds any one cell may run (default 300)")
    args = parser.parse_args(argv)

    if args.command == "build":
        from utils.course.notebooks import build

        changed = build(ROOT)
        for path in changed:
            print(f"wrote {path.relative_to(ROOT)}")
        print(f"{len(changed)} file(s) changed")
        return 0
    if args.command == "check":
        from utils.course.notebooks import check

        problems = check(ROOT)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print("notebooks are consistent: chapters fresh, solutions executed")
        return 1 if problems else 0
    if args.command == "execute":
        from utils.course.execute import SLOW_CELL_S, execute_in_place

        paths = args.notebooks or sorted((ROOT / "solutions").glob("*.ipynb"))
        for path in paths:
            if not path.is_file():
                print(f"error: {path} does not exist", file=sys.stderr)
                return 2
            timing = execute_in_place(path)
            cpu = sum(c.cpu_s or 0.0 for c in timing.cells)
            print(f"{path}: {timing.seconds:.1f} s (kernel CPU {cpu:.1f} s)")
            for cell in timing.slowest(3):
                flag = f"  <- over {SLOW_CELL_S:.0f} s" \
                    if cell.wall_s > SLOW_CELL_S else ""
                cpu_text = f", CPU {cell.cpu_s:.1f} s" if cell.cpu_s is not None \
                    else ""
                print(f"  cell {cell.index}: {cell.wall_s:.1f} s{cpu_text}  "
                      f"{cell.first_line}{flag}")
        return 0
    return _grade(args)


def _grade(args) -> int:
    from utils.course.grade import GradingError, grade

    full = True
    for path in args.notebooks:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        try:
            report = grade(path, chapter=args.chapter, timeout=args.timeout)
        except GradingError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{path} (chapter {report.chapter})")
        for r in report.results:
            print(f"  {'PASS' if r.passed else 'FAIL'}  {r.grade_id}  {r.message}"
                  .rstrip())
        for note in report.notes:
            print(f"  note: {note}")
        print(f"  score: {report.score:g}/{report.max_score:g}")
        full = full and report.score == report.max_score
    return 0 if full else 1


if __name__ == "__main__":
    sys.exit(main())
