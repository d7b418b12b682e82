"""Classical segmentation (chapter 10): what came before the networks, on the
course's data and metrics.

One module per method: :mod:`otsu` (thresholding), :mod:`edges` (Sobel,
non-maximum suppression, hysteresis), :mod:`region_growing`,
:mod:`watershed` (with :mod:`morphology` for its markers: distance transform,
h-maxima), :mod:`maxflow` (Boykov-Kolmogorov) and :mod:`graph_cut` (the
binary segmentation energy it minimises). :mod:`clicks` simulates a user's
clicks and scribbles from the ground truth, and :mod:`compare` holds what the
chapter's notebook and ``benchmarks/classical_and_crf.py`` share to run every
method on the same images. The fully connected CRF is :mod:`utils.crf`.
"""
