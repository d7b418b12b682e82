"""Course tooling: build chapters from solutions, check them, execute and grade.

python -m utils.course build          # chapters/ from solutions/
python -m utils.course check          # chapters fresh, solutions executed, rules kept
python -m utils.course execute solutions/00_introduction.ipynb  # + the slowest cells
python -m utils.course grade submitted/*.ipynb  # against the course's check cells

Modules: :mod:`~utils.course.notebooks` (the cells the tooling recognises, the
student version, the conventions), :mod:`~utils.course.execute` (running a
notebook in the ci profile, timed per cell), :mod:`~utils.course.grade`.
"""
