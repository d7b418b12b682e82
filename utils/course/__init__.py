"""Course tooling: build chapters from solutions, check them, execute and grade.

python -m utils.course build             # chapters/ from solutions/
python -m utils.course check             # chapters fresh, solutions executed
python -m utils.course execute solutions/00_introduction.ipynb
python -m utils.course grade my_copy_of_00_introduction.ipynb
"""
