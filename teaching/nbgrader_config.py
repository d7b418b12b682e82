"""nbgrader configuration for teaching with Segmentation from Scratch.

Copy this file into your nbgrader course folder (the folder that holds
``source/``), and either set ``COURSE_ROOT`` in the environment or edit the
path below. Then, with nbgrader installed (it is not a dependency of the
course), from that folder::

    mkdir -p source/ps03
    cp /path/to/segmentation-from-scratch/solutions/03_fcn.ipynb source/ps03/
    nbgrader generate_assignment ps03        # release/ps03/03_fcn.ipynb
    # ... students work, submissions land in submitted/<student>/ps03/ ...
    nbgrader autograde ps03
    nbgrader generate_feedback ps03          # feedback/<student>/ps03/*.html

See ``teaching/README.md`` for the whole workflow and what each step shows.
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821  (nbgrader's config loader provides it)

# Where the course's repository is. Every notebook imports its utils/ (the
# checks, the data, the models). nbgrader runs each submission in
# autograded/<student>/<assignment>/, outside the repository, so the kernels
# find utils/ through COURSE_ROOT (they inherit this process's environment).
# Without it every check cell fails and says so, and every score is 0.
COURSE_ROOT = os.environ.get("COURSE_ROOT") or "/path/to/segmentation-from-scratch"
if (Path(COURSE_ROOT) / "utils" / "checks").is_dir():
    os.environ["COURSE_ROOT"] = str(Path(COURSE_ROOT).resolve())
else:
    print(f"nbgrader_config.py: COURSE_ROOT={COURSE_ROOT!r} holds no utils/checks/; "
          "set COURSE_ROOT to the course's repository, or every check fails",
          file=sys.stderr)

# Grade in the ci profile: the smallest budgets, always on the CPU,
# deterministic; the profile the committed solutions were executed in. (Left
# unset, a notebook trains for minutes in the cpu or gpu profile.)
os.environ["COURSE_PROFILE"] = "ci"

# nbgrader interrupts any cell that runs longer than Execute.timeout seconds
# (30 by default) and scores the checks after it as failures. In the ci
# profile no cell of the course takes more than about 10 s on a quiet 2-core
# machine (python -m utils.course execute prints the slowest cells), but a
# grading machine that runs other work, or many kernels at once, can be ten
# times slower: allow 5 minutes per cell.
c.Execute.timeout = 300

# The course's solution regions are nbgrader's ### BEGIN/END SOLUTION markers,
# with nbgrader's default stub (the same as the course's chapters/):
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
