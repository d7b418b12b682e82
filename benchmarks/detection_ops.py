"""How fast the detection operations of utils.models.detection are on this CPU,
next to the naive references the tests check them against.

    python benchmarks/detection_ops.py [--threads N] [--repeats 5] [--quick]

Times (median wall-clock and CPU time per call, CPU time being the process's
user + system time over all threads, the honest measure on a shared machine):

- ``nms`` on 1,000 and 5,000 boxes (clusters of overlapping boxes around 60
  objects in an 800 x 800 image, IoU threshold 0.5; the issue's target: under
  5 ms for 1,000 boxes);
- ``roi_align`` of 512 RoIs (16 to 224 image pixels wide, spatial scale 1/4) at
  7 x 7 and 14 x 14 from a ``[2, 256, 200, 200]`` map, ``sampling_ratio`` 2 and
  adaptive, with the map in the default (channels-first) memory format and in
  ``torch.channels_last`` (which spares the layout copy), and forward+backward
  (the issue's target: under 50 ms at 7 x 7);
- the FPN anchor generator (5 levels, 3 ratios, a 2 x 800 x 1088 batch).

The naive references (loops from the definitions, in tests/) are timed on a
subset where they would take minutes, and scaled linearly (the row says so).
No torchvision needed.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests.test_detection_nms import naive_nms  # noqa: E402
from tests.test_detection_roi_align import naive_roi_align  # noqa: E402
from utils.models.detection import AnchorGenerator, ImageList, nms, roi_align  # noqa: E402


def timings(fn, repeats):
    """Median wall and CPU milliseconds per call, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def clustered_boxes(n, g, objects=60, image=800.0):
    """Boxes jittered around a few objects, as a detector's raw output."""
    centres = torch.rand(objects, 2, generator=g) * image
    sizes = 20 + torch.rand(objects, 2, generator=g) * 180
    which = torch.randint(0, objects, (n,), generator=g)
    c = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    s = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    return torch.cat([c - s / 2, c + s / 2], 1), torch.rand(n, generator=g)


def naive_anchors(sizes, ratios, grid_sizes, strides):
    """Anchors one position and one (ratio, size) at a time."""
    rows = []
    for level, ((H, W), (sh, sw)) in enumerate(zip(grid_sizes, strides)):
        for y in range(H):
            for x in range(W):
                for r in ratios[level]:
                    for s in sizes[level]:
                        w, h = s / r ** 0.5, s * r ** 0.5
                        hw = torch.tensor([-w, -h, w, h]) / 2
                        rows.append(hw.round() + torch.tensor([x * sw, y * sh] * 2))
    return torch.stack(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smaller naive subsets (a smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []  # (operation, case, (wall, cpu), naive (wall, cpu) or None, note)

    for n in (1000, 5000):
        boxes, scores = clustered_boxes(n, g)
        kept = len(nms(boxes, scores, 0.5))
        ours = timings(lambda b=boxes, s=scores: nms(b, s, 0.5), args.repeats)
        subset = n if not args.quick else 200
        naive = timings(lambda b=boxes[:subset], s=scores[:subset]:
                        naive_nms(b, s, 0.5), 1)
        note = f"{kept} kept" + ("" if subset == n else f"; naive on {subset} boxes")
        rows.append(("nms", f"{n} boxes", ours, naive, note))

    x = torch.randn(2, 256, 200, 200, generator=g)
    x_last = x.contiguous(memory_format=torch.channels_last)
    xy = torch.rand(512, 2, generator=g) * 600
    wh = 16 + torch.rand(512, 2, generator=g) * 208
    batch = torch.randint(0, 2, (512, 1), generator=g).float()
    rois = torch.cat([batch, xy, xy + wh], 1)
    naive_k = 4 if args.quick else 16
    for size in (7, 14):
        for ratio in (2, -1):
            for layout, feats in (("NCHW", x), ("channels_last", x_last)):
                ours = timings(lambda f=feats, s=size, r=ratio:
                               roi_align(f, rois, s, 0.25, r), args.repeats)
                naive = None
                note = ""
                if layout == "NCHW":
                    w, c = timings(lambda s=size, r=ratio: naive_roi_align(
                        x, rois[:naive_k], (s, s), 0.25, r), 1)
                    naive = (w * 512 / naive_k, c * 512 / naive_k)
                    note = f"naive: {naive_k} RoIs timed, x{512 // naive_k}"
                ratio_name = "adaptive" if ratio <= 0 else str(ratio)
                case = f"512 RoIs {size}x{size}, ratio {ratio_name}, {layout}"
                rows.append(("roi_align", case, ours, naive, note))
    xg = x.clone().requires_grad_()
    grad = torch.randn(512, 256, 7, 7, generator=g)
    both = timings(lambda: torch.autograd.grad(roi_align(xg, rois, 7, 0.25, 2), xg,
                                               grad), args.repeats)
    rows.append(("roi_align", "forward+backward 7x7, ratio 2, NCHW", both, None, ""))

    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    generator = AnchorGenerator(sizes, ratios)
    images = ImageList(torch.zeros(2, 3, 800, 1088), [(800, 1088), (780, 1000)])
    grids = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    feats = [torch.zeros(2, 1, h, w) for h, w in grids]
    ours = timings(lambda: generator(images, feats), args.repeats)
    count = len(generator(images, feats)[0])
    small = grids[-2:] if not args.quick else grids[-1:]
    strides = [(800 // h, 1088 // w) for h, w in small]
    w, c = timings(lambda: naive_anchors(sizes[-len(small):], ratios[-len(small):],
                                         small, strides), 1)
    share = sum(h * w for h, w in grids) / sum(h * w for h, w in small)
    rows.append(("AnchorGenerator", "FPN P2-P6, 2 images of 800x1088", ours,
                 (w * share, c * share),
                 f"{count} anchors/image; naive on the smallest level(s), scaled"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median of "
          f"{args.repeats}; ms per call, wall / CPU (CPU = user + system, all threads)")
    header = f"{'operation':16s} {'case':44s} {'ours wall':>9s} {'ours CPU':>9s} " \
             f"{'naive wall':>11s} {'speed-up':>8s}  note"
    print(header)
    print("-" * len(header))
    for op, case, (wall, cpu), naive, note in rows:
        naive_s = f"{naive[0]:11.1f}" if naive else f"{'-':>11s}"
        speed = f"{naive[0] / wall:7.0f}x" if naive else f"{'-':>8s}"
        print(f"{op:16s} {case:44s} {wall:9.1f} {cpu:9.1f} {naive_s} {speed}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
