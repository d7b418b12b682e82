"""Classical segmentation (chapter 10): what came before the networks, on the
course's data and metrics.

One module per method: :mod:`otsu` (thresholding), :mod:`edges` (Sobel and
non-maximum suppression), :mod:`region_growing`, :mod:`watershed` (with
:mod:`morphology` for its markers), :mod:`maxflow` (Boykov-Kolmogorov) and
:mod:`graph_cut` (the binary segmentation energy it minimises).
"""
