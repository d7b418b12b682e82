"""How long ConfusionMatrix.update takes on a 16 x 512 x 512 batch with 21
classes (issue: under 50 ms on the reference 2-core CPU).

    python benchmarks/confusion_speed.py [--threads N] [--repeats 20]

Reports the median and the best time over ``--repeats`` calls, for label
predictions and for logits (whose argmax over 21 channels dominates).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from utils.metrics import ConfusionMatrix  # noqa: E402


def timings(fn, repeats):
    fn()  # warm up (allocates the scratch buffer)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out) * 1e3, min(out) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 21, (16, 512, 512), generator=g)
    target[:, :8] = 255  # some ignored pixels, as in VOC
    pred = torch.randint(0, 21, (16, 512, 512), generator=g)
    logits = torch.randn(16, 21, 512, 512, generator=g)
    cm = ConfusionMatrix(21)
    for name, p in (("labels", pred), ("logits", logits)):
        median, best = timings(lambda p=p: cm.update(p, target), args.repeats)
        print(f"update({name}) 16x512x512, 21 classes, {args.threads} thread(s): "
              f"median {median:.1f} ms, best {best:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
