"""How fast Shapes generates samples on one core (issue: at least 1,000 images/s
at 128x128).

    python benchmarks/shapes_speed.py [--size 128] [--count 2000] [--task semantic]

Reports images per second of wall time and of this thread's CPU time; the two
agree on an idle machine, and CPU time stays meaningful on a busy one.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from utils.data.cells import Cells, CellsConfig  # noqa: E402
from utils.data.shapes import TASKS, Shapes, ShapesConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--count", type=int, default=2000, help="samples to generate")
    parser.add_argument("--task", choices=TASKS, default="semantic")
    parser.add_argument("--cells", action="store_true", help="the Cells variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.cells:
        ds = Cells(
            "train", args.count, CellsConfig(image_size=args.size), task=args.task
        )
    else:
        ds = Shapes(
            "train", args.count, ShapesConfig(image_size=args.size), task=args.task
        )
    ds[0]  # warm caches (interpolation matrices, textures)
    wall, cpu = time.perf_counter(), time.thread_time()
    for i in range(args.count):
        ds[i]
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    name = "Cells" if args.cells else "Shapes"
    print(
        f"{name} {args.size}x{args.size} task={args.task}: "
        f"{args.count / wall:,.0f} images/s wall, {args.count / cpu:,.0f} images/s "
        f"per CPU-second on one core"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
