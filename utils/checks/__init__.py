"""The check functions called under the chapters' exercises (one module per
chapter, ``chNN.py``)."""
