"""Detection and instance segmentation (chapters 08 and 09).

The operations Mask R-CNN stands on, each in a module of its own and each with
torchvision's signature and semantics (boxes are ``float [N, 4]`` as
``(x1, y1, x2, y2)``, indices ``int64``), then the networks built on them.
"""
