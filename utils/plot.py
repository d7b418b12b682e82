"""Figures: overlays, sample grids, predictions and training curves.

Every function returns the matplotlib ``Figure`` it drew, so a notebook shows
it and the command line saves it; none calls ``plt.show()`` itself.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils.data import IGNORE_INDEX
from utils.data.formats import colorize


def to_numpy_image(image) -> np.ndarray:
    """``float32 [3, H, W]`` tensor (or array) in [0, 1] to ``[H, W, 3]`` for imshow."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got {list(image.shape)}")
    return np.clip(image.transpose(1, 2, 0), 0, 1)


def overlay(image, label, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an image; ignore pixels (255) stay the image.

    ``image`` is ``[3, H, W]`` in [0, 1], ``label`` an integer map ``[H, W]``,
    ``palette`` ``uint8 [256, 3]``. Returns ``float [H, W, 3]`` in [0, 1].
    """
    img = to_numpy_image(image)
    lab = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if lab.shape != img.shape[:2]:
        raise ValueError(
            f"label {list(lab.shape)} does not match image {list(img.shape[:2])}"
        )
    colours = colorize(lab, palette).astype(np.float32) / 255
    blend = (1 - alpha) * img + alpha * colours
    return np.where((lab == IGNORE_INDEX)[..., None], img, blend)


def label_image(label, palette) -> np.ndarray:
    """A class map ``[H, W]`` in its palette colours, ``float [H, W, 3]`` in [0, 1]."""
    lab = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    return colorize(lab, palette).astype(np.float32) / 255


def panoptic_image(panoptic, palette) -> np.ndarray:
    """A panoptic map ``[H, W, 2]`` as colours: stuff in its class colour, each
    thing instance in its own shade of its class colour, void in the ignore
    colour. Returns ``float [H, W, 3]`` in [0, 1]."""
    pan = panoptic.cpu().numpy() if isinstance(panoptic, torch.Tensor) else panoptic
    pan = np.asarray(pan)
    if pan.ndim != 3 or pan.shape[-1] != 2:
        raise ValueError(f"expected a panoptic map [H, W, 2], got {list(pan.shape)}")
    out = label_image(pan[..., 0], palette)
    instance = pan[..., 1]
    # Golden-ratio steps spread neighbouring ids over distinct shades.
    shade = (instance * 0.618034) % 1.0
    factor = np.where(instance > 0, 0.35 + 0.9 * shade, 1.0)[..., None]
    return np.clip(out * factor, 0, 1)


def legend_handles(classes, palette):
    """Patches for a legend naming each class in its colour."""
    from matplotlib.patches import Patch

    return [
        Patch(color=np.asarray(palette[k]) / 255, label=name)
        for k, name in enumerate(classes)
    ]


def prediction_grid(
    images, targets, predictions, palette, classes=None, title=None
) -> plt.Figure:
    """One row per image: the image, the ground truth and the prediction."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for row in range(n):
        panels = (
            to_numpy_image(images[row]),
            label_image(targets[row], palette),
            label_image(predictions[row], palette),
        )
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(("image", "ground truth", "prediction")[col])
    if classes is not None:
        fig.legend(
            handles=legend_handles(classes, palette),
            loc="lower center",
            ncol=min(len(classes), 4),
            fontsize="small",
            frameon=False,
        )
        fig.subplots_adjust(bottom=0.12)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 if classes is not None else 0, 1, 1))
    return fig


def training_curves(history: list[dict], title=None) -> plt.Figure:
    """Loss (train and validation) and validation mIoU per epoch."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.legend()
    ax_iou.plot(epochs, [r["miou"] for r in history], "o-", color="tab:green")
    ax_iou.set(xlabel="epoch", ylabel="mIoU", title="validation mIoU", ylim=(0, 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
