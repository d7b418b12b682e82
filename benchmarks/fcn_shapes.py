"""FCN-32s vs FCN-16s vs FCN-8s on Shapes: the README's results table.

Trains the canonical models of chapter 03 with the chapter's budget for the
active profile (``COURSE_PROFILE``), exactly as the notebook does, and prints a
Markdown table of mIoU, boundary IoU, parameters and training time::

    COURSE_PROFILE=cpu python -m benchmarks.fcn_shapes

On a shared machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription (the
README figures were measured that way).
"""

from __future__ import annotations

import platform
import time

import torch

from utils import runtime
from utils.data import shapes
from utils.models import FCN8s, FCN16s, FCN32s
from utils.train import TrainConfig, fit


def main() -> None:
    rt = runtime.setup("03_fcn")
    b = rt.budget
    config = shapes.ShapesConfig(image_size=b.image_size)
    train_set = shapes.Shapes("train", b.train_size, config)
    val_set = shapes.Shapes("val", b.val_size, config)
    train_config = TrainConfig.from_budget(b, progress=False)
    device_name = (torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda"
                   else f"CPU ({platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} threads)")
    print(f"profile={rt.profile} device={device_name} budget={b}", flush=True)
    rows = []
    start_all = time.perf_counter()
    for name, cls in [("FCN-32s", FCN32s), ("FCN-16s", FCN16s), ("FCN-8s", FCN8s)]:
        torch.manual_seed(0)
        model = cls(shapes.NUM_CLASSES, width=b.width).to(rt.device)
        start = time.perf_counter()
        history = fit(model, train_set, val_set, train_config,
                      num_classes=shapes.NUM_CLASSES, device=rt.device)
        seconds = time.perf_counter() - start
        # fit evaluates on the validation set after every epoch: mIoU and
        # boundary IoU (3 px) of the final model are its last row.
        miou, biou = history[-1]["miou"], history[-1]["boundary_iou"]
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, miou, biou, params, seconds))
        print(f"{name}: mIoU {miou:.3f} boundary IoU {biou:.3f} ({seconds:.0f} s)",
              flush=True)
    print(f"\nwall time {time.perf_counter() - start_all:.0f} s\n")
    print("| model | mIoU | boundary IoU (3 px) | parameters | training time |")
    print("|---|---:|---:|---:|---:|")
    for name, miou, biou, params, seconds in rows:
        print(f"| {name} | {miou:.3f} | {biou:.3f} | {params:,} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
