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
    gr = sub.add_parser("grade", help="run a submitted notebook and score its checks")
    gr.add_argument("notebook", type=Path)
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
        from utils.course.execute import execute_in_place

        paths = args.notebooks or sorted((ROOT / "solutions").glob("*.ipynb"))
        for path in paths:
            if not path.is_file():
                print(f"error: {path} does not exist", file=sys.stderr)
                return 2
            print(f"{path}: {execute_in_place(path):.1f} s")
        return 0
    from utils.course.execute import grade

    if not args.notebook.is_file():
        print(f"error: {args.notebook} does not exist", file=sys.stderr)
        return 2
    results = grade(args.notebook)
    for grade_id, passed, message in results:
        print(f"{'PASS' if passed else 'FAIL'}  {grade_id}  {message}")
    score = sum(passed for _, passed, _ in results)
    print(f"score: {score}/{len(results)}")
    return 0 if score == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
