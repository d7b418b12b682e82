"""Box AP of :func:`utils.metrics.box_ap` against pycocotools' COCOeval
(``iouType="bbox"``), on random cases. Needs pycocotools (not a course
dependency): run it in an environment that has it::

    python benchmarks/reference/compare_box_ap.py [--cases 500]

Prints the number of cases and the largest difference of AP, AP50 and AP75.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from utils.metrics import box_ap  # noqa: E402


def random_case(rng):
    images, preds, targets = [], [], []
    for i in range(int(rng.integers(1, 5))):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (g, 2))
        wh = rng.uniform(1, 40, (g, 2))
        t_boxes = np.concatenate([xy, xy + wh], 1)
        t_labels = rng.integers(1, 4, g)
        d = int(rng.integers(0, 12))
        src = rng.integers(0, max(g, 1), d)
        jitter = rng.normal(0, 4, (d, 4))
        p_boxes = (t_boxes[src] if g else rng.uniform(0, 80, (d, 4))) + jitter
        p_boxes[:, 2:] = np.maximum(p_boxes[:, 2:], p_boxes[:, :2] + 0.5)
        p_labels = np.where(rng.random(d) < 0.8, t_labels[src] if g else 1,
                            rng.integers(1, 4, d))
        scores = np.round(rng.random(d), 2)  # ties happen
        images.append(i)
        targets.append({"boxes": torch.tensor(t_boxes, dtype=torch.float32),
                        "labels": torch.tensor(t_labels)})
        preds.append({"boxes": torch.tensor(p_boxes, dtype=torch.float32),
                      "labels": torch.tensor(p_labels), "scores":
                      torch.tensor(scores, dtype=torch.float32)})
    return preds, targets


def cocoeval(preds, targets):
    def xywh(b):
        b = b.double().numpy()
        return [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
                for x1, y1, x2, y2 in b]

    gt = {"images": [{"id": i + 1, "width": 200, "height": 200}
                     for i in range(len(targets))],
          "categories": [{"id": c} for c in (1, 2, 3)], "annotations": []}
    dets = []
    for i, (p, t) in enumerate(zip(preds, targets)):
        for box, label in zip(xywh(t["boxes"]), t["labels"].tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1,
                                      "image_id": i + 1, "category_id": label,
                                      "bbox": box, "area": box[2] * box[3],
                                      "iscrowd": 0})
        for box, label, s in zip(xywh(p["boxes"]), p["labels"].tolist(),
                                 p["scores"].tolist()):
            dets.append({"image_id": i + 1, "category_id": label, "bbox": box,
                         "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if not dets:
            return None
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:3]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=500)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    worst, n = np.zeros(3), 0
    for _ in range(args.cases):
        preds, targets = random_case(rng)
        ref = cocoeval(preds, targets)
        if ref is None or (ref < 0).any():
            continue  # no detections, or no ground truth at all: COCO says -1
        ours = box_ap(preds, targets)
        got = np.array([ours["ap"], ours["ap50"], ours["ap75"]])
        worst = np.maximum(worst, np.abs(np.nan_to_num(got, nan=-1) - ref))
        n += 1
    print(f"{n} cases; max |difference| AP {worst[0]:.2e}, AP50 {worst[1]:.2e}, "
          f"AP75 {worst[2]:.2e}")


if __name__ == "__main__":
    main()
