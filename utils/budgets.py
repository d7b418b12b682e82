"""What each chapter may spend in each profile: image size, dataset size,
epochs, batch size, model width and learning rate.

A notebook reads its budget through :func:`utils.runtime.setup`; the command
line reads the ``"train"`` entry. Each model chapter adds one entry, keyed by
its notebook's name, with all three profiles (a test checks that none is
missing). The ``ci`` entry must keep the chapter's notebook within 90 s on a
2-core CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PROFILES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class Budget:
    """What one chapter may spend in one profile."""

    image_size: int  # side of the square training images, pixels
    train_size: int  # images per training epoch
    val_size: int  # images in the validation set
    epochs: int  # passes over the training set
    batch_size: int  # images per optimisation step
    width: float  # channel multiplier for the chapter's models (1.0 = paper width)
    lr: float  # peak learning rate for the chapter's optimiser


# One entry per chapter (and "train" for the command line's default). Each model
# chapter adds its own line; a profile missing from an entry is an error.
BUDGETS: dict[str, dict[str, Budget]] = {
    "train": {
        "ci": Budget(64, 64, 16, 2, 16, 0.25, 3e-3),
        "cpu": Budget(96, 2048, 256, 10, 16, 0.5, 3e-3),
        "gpu": Budget(128, 8192, 512, 30, 32, 1.0, 3e-3),
    },
    # ci: width 0.25 keeps the training cell under 10 s on 2 cores, within
    # nbgrader's default limit of 30 s per cell even on a slower machine.
    "00_introduction": {
        "ci": Budget(64, 512, 64, 8, 16, 0.25, 5e-3),
        "cpu": Budget(96, 2048, 256, 10, 16, 0.5, 3e-3),
        "gpu": Budget(128, 8192, 512, 30, 32, 1.0, 3e-3),
    },
    # No training: the chapter scores simulated predictions on val_size images.
    "01_metrics_and_losses": {
        "ci": Budget(64, 0, 32, 0, 8, 1.0, 0.0),
        "cpu": Budget(128, 0, 256, 0, 16, 1.0, 0.0),
        "gpu": Budget(128, 0, 1024, 0, 32, 1.0, 0.0),
    },
    # Chapter 02 trains on windows: train_size images, batch_size windows per
    # step (the notebook draws a fixed number of windows from each image).
    "02_patch_classification": {
        "ci": Budget(48, 64, 8, 3, 64, 0.5, 3e-3),
        "cpu": Budget(64, 512, 32, 5, 128, 1.0, 2e-3),
        "gpu": Budget(96, 4096, 128, 10, 256, 1.0, 1e-3),
    },
    # Chapter 03 trains FCN-32s with this budget, then FCN-16s from it and
    # FCN-8s from FCN-16s for a quarter of the epochs at a third of the rate.
    # Plain VGG16 (no normalisation) from scratch wants small batches and
    # warm-up. cpu: at 64 px FCN-32s's score map is 2x2 and it never leaves
    # the class prior; at 128 px (4x4) it does, after about 6 epochs.
    "03_fcn": {
        "ci": Budget(64, 64, 32, 2, 8, 0.125, 3e-3),
        "cpu": Budget(128, 2048, 128, 8, 8, 0.125, 3e-3),
        "gpu": Budget(128, 8192, 512, 30, 16, 1.0, 5e-4),
    },
    # Chapter 04 trains the valid U-Net twice on Cells (with and without the
    # border weights) with this budget: image_size is the side of the Cells
    # images, 16 k + 4 so that the mirror-padded tile (+184) is legal;
    # val_size the held-out images whose cells are counted. Its Shapes
    # comparison with FCN-8s uses chapter 03's budget, like for like.
    "04_unet": {
        "ci": Budget(68, 48, 16, 4, 4, 0.125, 2e-3),
        "cpu": Budget(68, 256, 64, 8, 4, 0.125, 2e-3),
        "gpu": Budget(196, 2048, 256, 30, 4, 1.0, 5e-4),
    },
    # Chapter 05 trains FCN-8s, U-Net and SegNet (with and without median
    # frequency balancing) on Shapes, each with chapter 03's budget, so that
    # the comparison with chapter 03's FCN-8s is like for like.
    "05_segnet": {
        "ci": Budget(64, 64, 32, 2, 8, 0.125, 3e-3),
        "cpu": Budget(64, 2048, 128, 4, 8, 0.125, 3e-3),
        "gpu": Budget(128, 8192, 512, 30, 16, 1.0, 5e-4),
    },
    # Chapter 06 trains the Dilation10 front end, front end + context module
    # and FCN-8s, each with this budget; cpu is chapter 03's, so that its
    # FCN-8s figures can be held next to these. ci: the front end's dilated
    # fc6 (7x7 over 8x8 maps) makes each Dilation10 run about 5x FCN-8s's FLOPs.
    "06_dilated_convolution": {
        "ci": Budget(64, 64, 32, 2, 8, 0.125, 3e-3),
        "cpu": Budget(64, 2048, 128, 4, 8, 0.125, 3e-3),
        "gpu": Budget(128, 8192, 512, 30, 16, 1.0, 5e-4),
    },
    # Chapter 07 (and benchmarks/semantic_models.py) trains every semantic
    # model of the course with this one budget.
    "07_deeplabv3plus": {
        "ci": Budget(64, 64, 32, 2, 8, 0.125, 3e-3),
        "cpu": Budget(64, 2048, 128, 4, 8, 0.125, 3e-3),
        "gpu": Budget(128, 8192, 512, 30, 16, 1.0, 5e-4),
    },
    # Chapter 08 trains Mask R-CNN (ResNet-50 FPN, width-scaled) from scratch on
    # Shapes' instances; the cpu entry is benchmarks/maskrcnn_shapes.py's. The
    # model enlarges 64-px images to 128 (MaskRCNNConfig.for_profile), 1.6x the
    # cost of a step at 64 px: 2,560 images x 4 epochs took 17.9 CPU-minutes
    # (one thread), about what 4,096 images at 64 px had taken. ci: 96 images
    # keep the training cell at 20 s under the suite (two passive threads),
    # below nbgrader's default 30 s per cell.
    "08_mask_rcnn": {
        "ci": Budget(64, 96, 32, 3, 8, 0.125, 3e-3),
        "cpu": Budget(64, 2560, 128, 4, 8, 0.25, 2e-3),
        "gpu": Budget(128, 16384, 512, 24, 16, 1.0, 1e-3),
    },
    # Chapter 09 trains Panoptic FPN (Mask R-CNN's budget: the same network
    # plus a light branch); ci: a few steps, to show the contract, not to learn.
    "09_panoptic": {
        "ci": Budget(64, 8, 4, 1, 4, 0.125, 3e-3),
        "cpu": Budget(64, 2560, 128, 4, 8, 0.25, 2e-3),
        "gpu": Budget(128, 16384, 512, 24, 16, 1.0, 1e-3),
    },
    # Chapter 10 trains FCN-8s as chapter 03 does (train_size, epochs, batch,
    # width, lr) and compares every method on val_size held-out Shapes images
    # of image_size pixels. Its cells are chapter 04's held-out images
    # ("04_unet": image_size, val_size), so that the counts compare with U-Net's.
    "10_classical_and_crf": {
        "ci": Budget(64, 256, 8, 3, 8, 0.125, 3e-3),
        "cpu": Budget(64, 2048, 64, 4, 8, 0.125, 3e-3),
        "gpu": Budget(128, 8192, 256, 30, 16, 1.0, 5e-4),
    },
}


def budget(chapter: str, profile_name: str, **overrides) -> Budget:
    """The budget of ``chapter`` in profile ``profile_name``.

    Keyword arguments replace single fields, e.g. ``budget("train", epochs=1)``;
    a misspelled field name is an error rather than silently ignored.
    """
    name = profile_name
    if name not in PROFILES:
        raise ValueError(f"profile {name!r} is not one of {PROFILES}")
    if chapter not in BUDGETS:
        raise KeyError(
            f"no budget for chapter {chapter!r}; known chapters: {sorted(BUDGETS)}"
        )
    fields = {f.name for f in dataclasses.fields(Budget)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(
            f"unknown budget field(s) {sorted(unknown)}; fields are {sorted(fields)}"
        )
    return dataclasses.replace(BUDGETS[chapter][name], **overrides)
