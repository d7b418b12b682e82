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


def prediction_grid(images, targets, predictions, palette, classes=None,
                    title=None) -> plt.Figure:
    """One row per image: the image, the ground truth, then each model's
    prediction side by side.

    ``predictions`` is one list of label maps ``[H, W]`` (one per image), or a
    dict ``{model name: list}`` for several models, shown in its order.
    """
    if not isinstance(predictions, dict):
        predictions = {"prediction": predictions}
    for name, preds in predictions.items():
        if len(preds) != len(images):
            raise ValueError(f"{name}: {len(preds)} predictions for "
                             f"{len(images)} images")
    n, cols = len(images), 2 + len(predictions)
    fig, axes = plt.subplots(n, cols, figsize=(2.5 * cols, 2.5 * n), squeeze=False)
    titles = ["image", "ground truth", *predictions]
    for row in range(n):
        panels = [to_numpy_image(images[row]), label_image(targets[row], palette)]
        panels += [label_image(preds[row], palette) for preds in predictions.values()]
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(titles[col])
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


def draw_detections(ax, image, detections, classes, score_threshold=0.5,
                    colors=None) -> None:
    """Draw one image's detections on ``ax``: each mask tinted, its box, and
    "class score" above it. ``detections`` holds ``boxes [N, 4]``, ``labels
    [N]``, optionally ``scores [N]`` and ``masks`` (``[N, 1, H, W]``
    probabilities or ``[N, H, W]`` binary); only scores >= ``score_threshold``
    are drawn."""
    from matplotlib.patches import Rectangle

    img = to_numpy_image(image).copy()
    boxes = torch.as_tensor(detections["boxes"]).detach().cpu().float()
    labels = torch.as_tensor(detections["labels"]).detach().cpu()
    scores = detections.get("scores")
    scores = (torch.ones(len(boxes)) if scores is None
              else torch.as_tensor(scores).detach().cpu().float())
    masks = detections.get("masks")
    if masks is not None:
        masks = torch.as_tensor(masks).detach().cpu()
        masks = (masks[:, 0] if masks.ndim == 4 else masks).float() > 0.5
    colors = colors or plt.get_cmap("tab10").colors
    keep = (scores >= score_threshold).nonzero().flatten().tolist()
    for k, i in enumerate(keep):
        color = np.asarray(colors[k % len(colors)])
        if masks is not None:
            m = masks[i].numpy()
            img[m] = 0.45 * img[m] + 0.55 * color
    ax.imshow(img, interpolation="nearest")
    for k, i in enumerate(keep):
        x1, y1, x2, y2 = boxes[i].tolist()
        color = colors[k % len(colors)]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                               edgecolor=color, linewidth=1.5))
        name = classes[int(labels[i])] if int(labels[i]) < len(classes) else "?"
        ax.text(x1, y1, f"{name} {float(scores[i]):.2f}", color="white",
                fontsize=7, va="bottom", bbox=dict(facecolor=color, alpha=0.8,
                                                   pad=1, linewidth=0))
    ax.set_axis_off()


def detection_grid(images, detections, classes, targets=None, score_threshold=0.5,
                   title=None) -> plt.Figure:
    """One panel per image with its detections (and, with ``targets``, the
    ground truth beside each)."""
    n, cols = len(images), 1 if targets is None else 2
    fig, axes = plt.subplots(cols, n, figsize=(3 * n, 3 * cols), squeeze=False)
    for i in range(n):
        draw_detections(axes[0, i], images[i], detections[i], classes,
                        score_threshold)
        if targets is not None:
            draw_detections(axes[1, i], images[i], targets[i], classes, 0.0)
    axes[0, 0].set_title("predictions", loc="left")
    if targets is not None:
        axes[1, 0].set_title("ground truth", loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def panoptic_grid(images, targets, predictions, palette, title=None) -> plt.Figure:
    """One row per image: the image, the true and the predicted panoptic maps
    (``[H, W, 2]``; each thing instance in its own shade)."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for row in range(n):
        panels = (to_numpy_image(images[row]), panoptic_image(targets[row], palette),
                  panoptic_image(predictions[row], palette))
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(("image", "ground truth", "prediction")[col])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(history: list[dict], title=None) -> plt.Figure:
    """Loss (train and validation) and validation mIoU per epoch (semantic
    rows of :func:`utils.train.fit`)."""
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
