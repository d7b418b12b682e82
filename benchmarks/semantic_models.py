"""Every semantic model of the course on Shapes, one budget: the README's table.

Trains TinyFCN, FCN-8s, U-Net, SegNet, Dilation10, PSPNet, DeepLabV3 and
DeepLabV3+ (their canonical copies in ``utils.models``) with chapter 07's
budget for the active profile (``COURSE_PROFILE``): same images, epochs,
width, learning rate and seed, and measures what :mod:`utils.compare`
describes (parameters, FLOPs per image, CPU images/s, activation memory,
mIoU, boundary IoU), plus the peak resident memory of one training step,
each model in a fresh process (``--no-peak`` skips it)::

    OMP_NUM_THREADS=1 COURSE_PROFILE=cpu python -m benchmarks.semantic_models \\
        --json benchmarks/results/semantic_models_cpu.json \\
        --figure benchmarks/results/semantic_models_cpu.png

It prints a Markdown table and writes the rows as JSON (chapter 07 plots the
committed ``cpu`` file) and the accuracy-against-cost figure. A model that is
not registered (yet) is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import compare, runtime  # noqa: E402
from utils.budgets import budget  # noqa: E402
from utils.data import shapes  # noqa: E402
from utils.models import MODELS  # noqa: E402

CHAPTER = "07_deeplabv3plus"


def peak_memory_mb(name: str, profile: str) -> float:
    """Peak resident memory that one training step of ``name`` adds, in a
    fresh process (MiB): on Linux the resident size's high-water mark, reset
    just before the step (model built, batch made), minus the resident size
    then; elsewhere the growth of the process's peak."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.semantic_models", "--child-peak", name],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "COURSE_PROFILE": profile})
    return float(out.stdout.strip().splitlines()[-1])


def _resident_mb() -> tuple[float, float]:
    """(resident now, peak resident) in MiB."""
    status = Path("/proc/self/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        return (int(fields["VmRSS"].split()[0]) / 1024,
                int(fields["VmHWM"].split()[0]) / 1024)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    return peak, peak


def child_peak(name: str) -> None:
    b = budget(CHAPTER, runtime.profile())
    data = shapes.Shapes("train", b.batch_size,
                         shapes.ShapesConfig(image_size=b.image_size))
    images = torch.stack([data[i][0] for i in range(b.batch_size)])
    targets = torch.stack([data[i][1] for i in range(b.batch_size)])
    torch.manual_seed(0)
    model = MODELS[name](shapes.NUM_CLASSES, width=b.width).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=b.lr)
    clear_refs = Path("/proc/self/clear_refs")
    if clear_refs.exists():
        clear_refs.write_text("5")  # reset the high-water mark to the current size
    before, _ = _resident_mb()
    loss = torch.nn.functional.cross_entropy(model(images), targets, ignore_index=255)
    loss.backward()
    optimizer.step()
    print(f"{_resident_mb()[1] - before:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(compare.NAMES),
                        choices=list(compare.NAMES))
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--figure", type=Path, help="save the figure here (PNG)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other models' rows of the --json file")
    parser.add_argument("--no-peak", action="store_true",
                        help="skip the peak-memory processes")
    parser.add_argument("--child-peak", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_peak:
        child_peak(args.child_peak)
        return 0
    rt = runtime.setup(CHAPTER)
    b = rt.budget
    train_set, val_set = shapes.budget_splits(b)
    machine = runtime.describe_device(rt.device)
    print(f"profile={rt.profile} device={machine} budget={b}", flush=True)
    rows, start = [], time.perf_counter()
    for key in args.models:
        if key not in MODELS:
            print(f"{key}: not registered in utils.models, skipped", flush=True)
            continue
        row, _ = compare.measure(key, b, train_set, val_set, rt.device,
                                 shapes.NUM_CLASSES, progress=False,
                                 log=lambda *a: None)
        if not args.no_peak:
            row["peak_mb"] = peak_memory_mb(key, rt.profile)
        rows.append(row)
        print(f"{row['model']}: mIoU {row['miou']:.3f}, boundary IoU "
              f"{row['boundary_iou']:.3f}, {row['train_s']:.0f} s "
              f"(CPU {row['train_cpu_s']:.0f} s)", flush=True)
    print(f"\nwall time {time.perf_counter() - start:.0f} s\n")
    print(compare.table(rows))
    if not args.no_peak:
        print("\n| model | peak memory of a training step (MiB, fresh process) | "
              "training time, wall (CPU) |")
        print("|---|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['peak_mb']:.0f} | {r['train_s']:.0f} s "
                  f"({r['train_cpu_s']:.0f} s) |")
    if args.update and args.json and args.json.exists():
        kept = {r["key"]: r for r in json.loads(args.json.read_text())["rows"]}
        kept.update({r["key"]: r for r in rows})
        rows = [kept[k] for k in compare.NAMES if k in kept]
        print("\nwith the other rows of", args.json)
        print(compare.table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"profile": rt.profile, "budget": b.__dict__, "device": machine,
                "command": "python -m benchmarks.semantic_models"}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        compare.plot(rows, f"Shapes, {rt.profile} profile").savefig(args.figure,
                                                                    dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
