"""Tiny models with the instance and panoptic conventions, so that the training
loop's instance and panoptic paths are tested without Mask R-CNN.

Both classify every pixel with two convolutions and read instances off the
class map (one instance per class present in an image): crude, but they take
images of different sizes in one list, return named losses in train mode and
torchvision-style outputs in eval mode, and learn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelNet(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        c = max(2, round(8 * width))
        self.body = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, num_classes, 3, padding=1))

    def scores(self, image):
        return self.body(image[None])[0]  # (K, H, W)


def _class_map(target, shape) -> torch.Tensor:
    """Per-pixel instance class (0 = background) from an instance target."""
    out = torch.zeros(shape, dtype=torch.int64, device=target["labels"].device)
    for mask, label in zip(target["masks"], target["labels"]):
        out[mask.bool()] = label
    return out


class TinyInstance(nn.Module):
    """Instance conventions: ``model(images, targets)`` -> two named losses;
    ``model(images)`` -> per image ``boxes``, ``labels``, ``scores``, ``masks``
    ``[N, 1, H, W]``."""

    task = "instance"

    def __init__(self, num_classes: int, width: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.net = PixelNet(num_classes, width)

    def forward(self, images, targets=None):
        if self.training:
            cls, fg = [], []
            for image, target in zip(images, targets):
                s = self.net.scores(image)
                truth = _class_map(target, image.shape[1:])
                cls.append(F.cross_entropy(s[None], truth[None]))
                fg.append(F.binary_cross_entropy_with_logits(
                    s[1:].logsumexp(0) - s[0], (truth > 0).float()))
            return {"loss_classifier": torch.stack(cls).mean(),
                    "loss_mask": torch.stack(fg).mean()}
        out = []
        for image in images:
            prob = self.net.scores(image).softmax(0)
            found = prob.argmax(0)
            labels = [k for k in range(1, self.num_classes) if (found == k).any()]
            masks = torch.stack([(found == k) for k in labels]) if labels else \
                torch.zeros(0, *found.shape, dtype=torch.bool)
            boxes = torch.zeros(len(labels), 4)
            for i, m in enumerate(masks):
                ys, xs = m.nonzero(as_tuple=True)
                boxes[i] = torch.stack([xs.min(), ys.min(), xs.max() + 1,
                                        ys.max() + 1]).float()
            scores = torch.stack([prob[k][found == k].mean() for k in labels]) \
                if labels else torch.zeros(0)
            out.append({"boxes": boxes, "labels": torch.tensor(labels).long(),
                        "scores": scores,
                        "masks": masks[:, None].float() * prob[labels][:, None]
                        if labels else torch.zeros(0, 1, *found.shape)})
        return out


class TinyPanoptic(nn.Module):
    """Panoptic conventions: two named losses in train mode; per image a
    ``panoptic`` map ``[H, W, 2]`` (category, instance id) in eval mode."""

    task = "panoptic"

    def __init__(self, num_classes: int, width: float = 1.0, thing_ids=()):
        super().__init__()
        self.thing_ids = tuple(thing_ids)
        self.net = PixelNet(num_classes, width)

    def forward(self, images, targets=None):
        if self.training:
            sem, things = [], []
            things_ids = torch.tensor(self.thing_ids)
            for image, target in zip(images, targets):
                s = self.net.scores(image)
                sem.append(F.cross_entropy(s[None], target["semantic"][None],
                                           ignore_index=255))
                is_thing = torch.isin(target["semantic"], things_ids).float()
                thingness = s[list(self.thing_ids)].logsumexp(0) - s.logsumexp(0)
                things.append(F.binary_cross_entropy_with_logits(
                    thingness, is_thing))
            return {"loss_semantic": torch.stack(sem).mean(),
                    "loss_things": torch.stack(things).mean()}
        out = []
        for image in images:
            category = self.net.scores(image).argmax(0)
            instance = torch.zeros_like(category)
            for k, c in enumerate(self.thing_ids, start=1):
                instance[category == c] = k
            out.append({"panoptic": torch.stack([category, instance], -1)})
        return out
