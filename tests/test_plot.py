import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from utils import plot
from utils.data import shapes


def test_overlay_blends_and_leaves_ignore_alone():
    image = torch.full((3, 2, 2), 0.5)
    label = torch.tensor([[0, 3], [255, 3]])
    out = plot.overlay(image, label, shapes.PALETTE, alpha=1.0)
    assert out.shape == (2, 2, 3)
    assert np.allclose(out[1, 0], 0.5), "ignore pixels show the image"
    assert np.allclose(out[0, 1], shapes.PALETTE[3] / 255)
    with pytest.raises(ValueError, match="does not match"):
        plot.overlay(image, torch.zeros(3, 2, dtype=torch.long), shapes.PALETTE)


def test_panoptic_image_shades_instances_of_one_class_differently():
    pan = torch.zeros(1, 3, 2, dtype=torch.long)
    pan[0, :, 0] = torch.tensor([0, 3, 3])
    pan[0, :, 1] = torch.tensor([0, 1, 2])
    out = plot.panoptic_image(pan, shapes.PALETTE)
    assert np.allclose(out[0, 0], shapes.PALETTE[0] / 255)
    assert not np.allclose(out[0, 1], out[0, 2])
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        plot.panoptic_image(torch.zeros(3, 3), shapes.PALETTE)


def test_figures_draw():
    ds = shapes.Shapes("val", 2, shapes.ShapesConfig(image_size=32))
    images, targets = zip(*[ds[i] for i in range(2)])
    fig = plot.prediction_grid(images, targets, targets, shapes.PALETTE, shapes.CLASSES)
    assert len(fig.axes) == 6
    plt.close(fig)
    fig = plot.prediction_grid(images, targets, {"a": targets, "b": targets},
                               shapes.PALETTE)
    assert len(fig.axes) == 8 and fig.axes[3].get_title() == "b"
    plt.close(fig)
    with pytest.raises(ValueError, match="1 predictions for 2 images"):
        plot.prediction_grid(images, targets, {"a": targets[:1]}, shapes.PALETTE)
    inst = shapes.Shapes("val", 2, shapes.ShapesConfig(image_size=32), task="instance")
    image, target = inst[0]
    fig = plot.detection_grid([image], [target], ("",) + shapes.CLASSES,
                              targets=[target])
    n = len(target["labels"])
    assert len(fig.axes[0].patches) == n and len(fig.axes[0].texts) == n
    plt.close(fig)
    pan = shapes.Shapes("val", 1, shapes.ShapesConfig(image_size=32), task="panoptic")
    image, target = pan[0]
    fig = plot.panoptic_grid([image], [target], [target], shapes.PALETTE)
    assert len(fig.axes) == 3
    plt.close(fig)
    history = [
        {"epoch": 1, "train_loss": 2.0, "val_loss": 1.9, "miou": 0.1},
        {"epoch": 2, "train_loss": 1.5, "val_loss": 1.6, "miou": 0.3},
    ]
    fig = plot.training_curves(history)
    assert fig.axes[1].lines[0].get_ydata().tolist() == [0.1, 0.3]
    plt.close(fig)
