"""What differs between the three tasks when training: how a batch is put
together, what the loss terms are, how the model is evaluated and which
columns ``metrics.csv`` has. The loop (:mod:`utils.train.loop`) is the same
for all three.

- **semantic** (chapters 00-07): ``model(images)`` returns logits
  ``[B, K, H, W]`` for images ``float32 [B, 3, H, W]`` in [0, 1]; the loss is
  cross-entropy with ``ignore_index``; evaluation accumulates a confusion
  matrix (mIoU, pixel accuracy, Dice) and one on the band around the true
  edges (boundary IoU, :mod:`utils.metrics.boundary`).
- **instance** (chapter 08), torchvision's conventions: images are a list of
  ``float32 [3, H_i, W_i]``; in train mode ``model(images, targets)`` returns
  a dict of named scalar losses (Mask R-CNN's five), each logged on its own;
  in eval mode ``model(images)`` returns one dict per image with ``boxes``
  ``float [N, 4]``, ``labels`` ``int64 [N]``, ``scores`` ``[N]`` and
  ``masks`` ``float [N, 1, H, W]`` in [0, 1]. Evaluation is COCO box AP and
  mask AP (masks binarised at 0.5, as COCO's evaluation of Mask R-CNN does).
- **panoptic** (chapter 09): train mode as instance (a dict of losses, the
  targets carrying ``semantic``, ``boxes``, ``labels``, ``masks`` and
  ``panoptic``); eval mode returns one dict per image with ``panoptic``
  ``int64 [H, W, 2]`` (category, instance id); evaluation is PQ, SQ and RQ for
  all categories, things and stuff.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.data import IGNORE_INDEX
from utils.data.contract import check_labels
from utils.data.registry import pad_collate
from utils.metrics import ConfusionMatrix, DetectionAP, PanopticQuality
from utils.metrics.boundary import boundary_target
from utils.metrics.reduce import all_reduce_sum_


def to_device(x, device):
    """Move a tensor, or the tensors in a list/tuple/dict, to ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def list_collate(batch):
    """``(images, targets)`` as two lists: images may differ in size (the
    detection model resizes and pads them itself)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def _check_loss_dict(losses, model) -> dict:
    if not isinstance(losses, dict) or not losses or not all(
        isinstance(v, torch.Tensor) and v.ndim == 0 for v in losses.values()
    ):
        raise TypeError(
            f"{type(model).__name__} in train mode must return a dict of scalar "
            f"losses for model(images, targets), got {type(losses).__name__}"
        )
    return losses


class SemanticTask:
    """Per-pixel classes: cross-entropy, mIoU and boundary IoU."""

    name = "semantic"
    columns = ("val_loss", "miou", "boundary_iou", "pixel_accuracy", "mean_dice")
    headline = ("miou", "mIoU")  # the column that says how good a model is

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 loss_fn=None, boundary_width: int = 3):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.loss_fn = loss_fn or self.cross_entropy
        self.boundary_width = boundary_width  # pixels either side of a true edge

    def cross_entropy(self, logits, targets):
        return F.cross_entropy(logits, targets, ignore_index=self.ignore_index)

    collate = staticmethod(pad_collate)

    def losses(self, model, images, targets) -> dict:
        logits = model(images)
        # Checked here: on CUDA a bad label is only an opaque device-side assert.
        check_labels(targets, self.num_classes, self.ignore_index, "targets")
        return {"loss": self.loss_fn(logits.float(), targets)}

    def evaluator(self, device):
        return SemanticEvaluator(self, device)

    def describe(self, row: dict) -> str:
        return (f"val loss {row['val_loss']:.4f}  mIoU {row['miou']:.4f}  "
                f"boundary IoU {row['boundary_iou']:.4f}  "
                f"pixel acc {row['pixel_accuracy']:.4f}")


class SemanticEvaluator:
    """Confusion matrices over the whole validation set, and the mean loss."""

    def __init__(self, task: SemanticTask, device):
        self.task = task
        K, ignore = task.num_classes, task.ignore_index
        self.matrix = ConfusionMatrix(K, ignore, device=device)
        self.band = ConfusionMatrix(K, ignore, device=device)
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, images

    def update(self, model, images, targets) -> None:
        logits = model(images).float()
        self.sums[0] += self.task.loss_fn(logits, targets).double() * len(images)
        self.sums[1] += len(images)
        self.matrix.update(logits, targets)
        band = boundary_target(targets, self.task.boundary_width,
                               self.task.ignore_index)
        self.band.update(logits, band)

    def all_reduce(self) -> None:
        self.matrix.all_reduce()
        self.band.all_reduce()
        all_reduce_sum_(self.sums)

    def compute(self) -> dict:
        """The row's columns, plus per-class ``iou`` and ``boundary_iou_per_class``
        (float64 ``[K]``, NaN for a class absent from target and prediction)."""
        m, b = self.matrix.compute(), self.band.compute()
        return {
            "val_loss": float(self.sums[0] / self.sums[1].clamp(min=1)),
            "miou": m["mean_iou"],
            "boundary_iou": b["mean_iou"],
            "pixel_accuracy": m["pixel_accuracy"],
            "mean_dice": m["mean_dice"],
            "iou": m["iou"],
            "boundary_iou_per_class": b["iou"],
        }


class InstanceTask:
    """Boxes, classes and masks per object: a dict of losses, box and mask AP."""

    name = "instance"
    columns = ("box_ap", "box_ap50", "mask_ap", "mask_ap50")
    headline = ("mask_ap", "mask AP")
    collate = staticmethod(list_collate)

    def __init__(self, num_classes: int):
        self.num_classes = num_classes  # including the background, label 0

    def losses(self, model, images, targets) -> dict:
        for t in targets:
            check_labels(t["labels"], self.num_classes, None, "instance labels")
        return _check_loss_dict(model(images, targets), model)

    def evaluator(self, device):
        return InstanceEvaluator()

    def describe(self, row: dict) -> str:
        return (f"box AP {row['box_ap']:.4f} (AP50 {row['box_ap50']:.4f})  "
                f"mask AP {row['mask_ap']:.4f} (AP50 {row['mask_ap50']:.4f})")


class InstanceEvaluator:
    def __init__(self):
        self.boxes, self.masks = DetectionAP("bbox"), DetectionAP("segm")

    def update(self, model, images, targets) -> None:
        outputs = model(images)
        predicted = [{"boxes": o["boxes"].float().cpu(),
                      "labels": o["labels"].cpu(),
                      "scores": o["scores"].float().cpu(),
                      "masks": (o["masks"][:, 0] > 0.5).cpu()} for o in outputs]
        truth = [{"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu(),
                  "masks": t["masks"].cpu()} for t in targets]
        self.boxes.update(predicted, truth)
        self.masks.update(predicted, truth)

    def all_reduce(self) -> None:
        self.boxes.all_reduce()
        self.masks.all_reduce()

    def compute(self) -> dict:
        b, m = self.boxes.compute(), self.masks.compute()
        return {"box_ap": b["ap"], "box_ap50": b["ap50"], "mask_ap": m["ap"],
                "mask_ap50": m["ap50"], "box_ap_per_class": b["per_class"],
                "mask_ap_per_class": m["per_class"]}


class PanopticTask:
    """A class for every pixel and an identity for every thing: PQ, SQ, RQ."""

    name = "panoptic"
    columns = ("pq", "sq", "rq", "pq_things", "pq_stuff")
    headline = ("pq", "PQ")
    collate = staticmethod(list_collate)

    def __init__(self, things, stuffs, void: int = IGNORE_INDEX):
        self.things, self.stuffs, self.void = tuple(things), tuple(stuffs), void

    def losses(self, model, images, targets) -> dict:
        return _check_loss_dict(model(images, targets), model)

    def evaluator(self, device):
        return PanopticEvaluator(self)

    def describe(self, row: dict) -> str:
        return (f"PQ {row['pq']:.4f} (things {row['pq_things']:.4f}, stuff "
                f"{row['pq_stuff']:.4f})  SQ {row['sq']:.4f}  RQ {row['rq']:.4f}")


class PanopticEvaluator:
    def __init__(self, task: PanopticTask):
        self.pq = PanopticQuality(task.things, task.stuffs, task.void)

    def update(self, model, images, targets) -> None:
        for output, target in zip(model(images), targets):
            self.pq.update(output["panoptic"].cpu(), target["panoptic"].cpu())

    def all_reduce(self) -> None:
        self.pq.all_reduce()

    def compute(self) -> dict:
        out = self.pq.compute()
        return {"pq": out["pq"], "sq": out["sq"], "rq": out["rq"],
                "pq_things": out["pq_things"], "pq_stuff": out["pq_stuff"],
                "per_class": out["per_class"]}
