"""Chapter 10's figures: every method on the same held-out images, the dense
CRF's gain on the networks, and the lattice's error against exact messages.

    COURSE_PROFILE=cpu python -m benchmarks.classical_and_crf          # tables
    COURSE_PROFILE=cpu python -m benchmarks.classical_and_crf --tune   # CRF grid
    python -m benchmarks.classical_and_crf --lattice   # exact vs lattice only

The default run trains FCN-8s exactly as the notebook does (chapter 10's
budget for the active profile, seed 0; DeepLabV3+ too once it is registered
in ``utils.models.MODELS``), then scores on ``val_size`` held-out Shapes
images (the test split) Otsu's threshold, region growing, the watershed and
the graph cut (the last three from one simulated click per true region), and
the networks with and without ``utils.crf.dense_crf`` (``utils.crf.SHAPES``).
It also splits chapter 04's held-out cells with the watershed. Every row
gives CPU seconds per image, and the run prints its wall and CPU time.

``--tune`` searches the CRF's parameters on the *validation* split with the
trained FCN-8s and prints the grid sorted by mIoU; ``utils.crf.SHAPES`` holds
its best row. ``--lattice`` compares the permutohedral lattice's messages
with the exact ones on the Grace Hopper portrait at two sizes.

``--json PATH`` (default run and ``--lattice``) also writes every figure the
tables print, with the budget, device, threads, the CRF's parameters and the
wall and CPU time, for chapter 10 to read back::

    COURSE_PROFILE=cpu python -m benchmarks.classical_and_crf \
        --json benchmarks/results/classical_and_crf_cpu.json

On a shared machine, ``OMP_NUM_THREADS=1`` avoids thread oversubscription.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import platform
import time
from pathlib import Path

import matplotlib.cbook as cbook
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from benchmarks.record import header, write_results
from utils import budgets, crf, runtime
from utils.classical import compare, graph_cut
from utils.classical.otsu import otsu_threshold
from utils.data import shapes
from utils.data.cells import Cells, CellsConfig
from utils.metrics import ConfusionMatrix, boundary_target
from utils.metrics.instances import connected_components, instance_scores
from utils.models import MODELS, FCN8s
from utils.train import TrainConfig, fit

K = shapes.NUM_CLASSES
BAND = 3  # boundary IoU: pixels within 3 px of a true edge


TRAINING = {}  # network name -> wall and CPU seconds of its training


def train(name: str, build, b, rt) -> torch.nn.Module:
    config = shapes.ShapesConfig(image_size=b.image_size)
    torch.manual_seed(0)
    model = build()
    start, cpu = time.perf_counter(), time.process_time()
    fit(model, shapes.Shapes("train", b.train_size, config),
        shapes.Shapes("val", 8, config), TrainConfig.from_budget(b, progress=False),
        num_classes=K, device=rt.device, log=lambda *args: None)
    TRAINING[name] = {"train_wall_s": time.perf_counter() - start,
                      "train_cpu_s": time.process_time() - cpu}
    print(f"trained {name}: {TRAINING[name]['train_wall_s']:.0f} s wall, "
          f"{TRAINING[name]['train_cpu_s']:.0f} s CPU", flush=True)
    return model.eval()


def networks(b, rt) -> dict:
    """The trained semantic networks: FCN-8s, and DeepLabV3+ when registered."""
    models = {"FCN-8s": train("FCN-8s", lambda: FCN8s(K, width=b.width), b, rt)}
    if "deeplabv3plus" in MODELS:
        models["DeepLabV3+"] = train(
            "DeepLabV3+", lambda: MODELS["deeplabv3plus"](K, width=b.width), b, rt)
    return models


def class_scores(labels, targets) -> tuple[float, float]:
    cm, band = ConfusionMatrix(K), ConfusionMatrix(K)
    cm.update(labels, targets)
    band.update(labels, boundary_target(targets, BAND))
    return cm.compute()["mean_iou"], band.compute()["mean_iou"]


def split_images(split: str, count: int, size: int):
    data = shapes.Shapes(split, count, shapes.ShapesConfig(image_size=size))
    images = torch.stack([data[i][0] for i in range(count)])
    targets = torch.stack([data[i][1] for i in range(count)])
    return images, targets


def probabilities(model, images, rt) -> tuple[torch.Tensor, float]:
    start = time.process_time()
    with torch.no_grad():
        p = model(images.to(rt.device)).softmax(1).cpu()
    return p, (time.process_time() - start) / len(images)


def table(b, rt, models) -> dict:
    """Print the Shapes tables; return their rows (name -> figures)."""
    images, targets = split_images("test", b.val_size, b.image_size)
    rows = {}

    def timed(name, method, miou=None):
        start = time.process_time()
        masks = torch.stack([method(i, t) for i, t in zip(images, targets)])
        rows[name] = (miou, masks, (time.process_time() - start) / len(images))

    timed("Otsu (better polarity)", compare.otsu_best_polarity)
    for method in compare.INTERACTIVE:
        timed(f"{method} (clicks)",
              lambda i, t, m=method: compare.interactive(i, t, m))
    gains, boundary = [], {}
    for name, model in models.items():
        p, seconds = probabilities(model, images, rt)
        start = time.process_time()
        q = crf.dense_crf(images, p, crf.SHAPES)
        crf_seconds = (time.process_time() - start) / len(images)
        for label, probs, cost in [(name, p, seconds),
                                   (f"{name} + CRF", q, seconds + crf_seconds)]:
            miou, biou = class_scores(probs.argmax(1), targets)
            rows[label] = (miou, probs.argmax(1) >= compare.FIRST_THING, cost)
            gains.append((label, miou, biou))
            boundary[label] = biou
    print(f"\n{b.val_size} held-out Shapes images (test split), "
          f"{b.image_size} x {b.image_size}\n")
    print("| method | mIoU (8 classes) | foreground IoU | boundary IoU (fg/bg, 3 px) "
          "| CPU s / image |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for name, (miou, masks, seconds) in rows.items():
        fg, band = compare.binary_scores(masks, targets, BAND)
        shown = f"{miou:.3f}" if miou is not None else "-"
        print(f"| {name} | {shown} | {fg:.3f} | {band:.3f} | {seconds:.3f} |")
        results[name] = {"miou": miou, "boundary_iou": boundary.get(name),
                         "foreground_iou": fg, "boundary_iou_binary": band,
                         "cpu_s_per_image": seconds}
    print("\n| network | mIoU | boundary IoU (8 classes, 3 px) |")
    print("|---|---:|---:|")
    for label, miou, biou in gains:
        print(f"| {label} | {miou:.3f} | {biou:.3f} |")
    return {"images": b.val_size, "image_size": b.image_size, "rows": results}


def cells_table(rt) -> dict:
    """Print the cells table; return its rows (name -> counts)."""
    cb = budgets.budget("04_unet", rt.profile)
    held_out = Cells("test", cb.val_size, CellsConfig(image_size=cb.image_size),
                     task="panoptic")
    images = torch.stack([held_out[i][0] for i in range(len(held_out))])
    panoptic = torch.stack([held_out[i][1] for i in range(len(held_out))])

    def otsu_components(image):
        grey = image.mean(0)
        return connected_components(grey >= otsu_threshold(grey))

    methods = {"Otsu, connected components": otsu_components,
               "watershed on the distance":
                   lambda image: compare.split_cells(image, "distance"),
               "watershed on the intensity": compare.split_cells}
    print(f"\n{len(images)} held-out cells images (chapter 04's test split), "
          f"{cb.image_size} x {cb.image_size}\n")
    print("| method | true cells | matched (IoU > 0.5) | merged | split | F1 "
          "| CPU s / image |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = {}
    for name, method in methods.items():
        start = time.process_time()
        objects = torch.stack([method(image) for image in images])
        seconds = (time.process_time() - start) / len(images)
        r = instance_scores(objects, panoptic[..., 1], panoptic[..., 0] == 255)
        print(f"| {name} | {r['num_true']} | {r['tp']} | {r['merged']} | "
              f"{r['split']} | {r['f1']:.3f} | {seconds:.3f} |")
        results[name] = {**r, "cpu_s_per_image": seconds}
    return {"images": len(images), "image_size": cb.image_size, "rows": results}


def tune(b, rt, models) -> None:
    images, targets = split_images("val", 16, b.image_size)
    p, _ = probabilities(models["FCN-8s"], images, rt)
    print(f"\nFCN-8s on 16 validation images, before the CRF: mIoU, boundary IoU "
          f"{class_scores(p.argmax(1), targets)}")
    unary = crf.unary_from_probabilities(p).flatten(2)  # (B, K, N)
    results = []
    for ta, tb in itertools.product([5.0, 10.0, 20.0, 40.0], [0.025, 0.05, 0.1]):
        base = dataclasses.replace(crf.SHAPES, theta_alpha=ta, theta_beta=tb)
        # One message operator per kernel and image, reused for every weight.
        appearance = [crf.message_function(i, base, w1=1.0, w2=0.0) for i in images]
        smooth = [crf.message_function(i, base, w1=0.0, w2=1.0) for i in images]
        for w1, w2 in itertools.product([3.0, 10.0, 30.0], [0.0, 3.0]):
            labels = []
            for n in range(len(images)):
                q = torch.softmax(-unary[n], 0)
                for _ in range(base.iterations):
                    m = w1 * appearance[n](q) + (w2 * smooth[n](q) if w2 else 0)
                    q = torch.softmax(-unary[n] + m, 0)
                labels.append(q.argmax(0).view(b.image_size, b.image_size))
            scores = class_scores(torch.stack(labels), targets)
            results.append((scores, ta, tb, w1, w2))
            print(f"theta_alpha {ta:4.0f} theta_beta {tb:.3f} w1 {w1:4.1f} "
                  f"w2 {w2:3.1f}: mIoU {scores[0]:.4f} boundary IoU {scores[1]:.4f}",
                  flush=True)
    print("\n| theta_alpha | theta_beta | w1 | w2 | mIoU | boundary IoU |")
    print("|---:|---:|---:|---:|---:|---:|")
    for (miou, biou), ta, tb, w1, w2 in sorted(results, key=lambda r: -r[0][0])[:8]:
        print(f"| {ta:.0f} | {tb} | {w1:.0f} | {w2:.0f} | {miou:.4f} | {biou:.4f} |")


def lattice_error() -> list:
    """Print the lattice's error table; return its rows."""
    full = torch.from_numpy(plt.imread(cbook.get_sample_data("grace_hopper.jpg"))
                            .copy()).permute(2, 0, 1).float() / 255
    print("\n| image | pixels N | lattice points | mean abs(Q_exact - Q_lattice) | "
          "labels that agree | exact, CPU s | lattice, CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for factor in (8, 4):
        image = F.avg_pool2d(full[None], factor)[0]
        C, H, W = image.shape
        fg = torch.zeros(H, W, dtype=torch.bool)
        bg = torch.zeros_like(fg)
        fg[H // 3 :, W // 2 - 1 : W // 2 + 1] = True  # down the middle
        bg[:, :2] = True  # the left edge and the top
        bg[:3] = True
        costs = torch.stack([graph_cut.colour_histogram_costs(image, bg),
                             graph_cut.colour_histogram_costs(image, fg)])
        p = torch.softmax(-costs, 0).float()
        config = crf.DenseCRFConfig(theta_alpha=67 * W / 513)  # DeepLab's, scaled
        results = {}
        for method in ("exact", "lattice"):
            start = time.process_time()
            results[method] = crf.dense_crf(image, p, config, method=method)
            results[method + " s"] = time.process_time() - start
        points = crf.PermutohedralLattice(
            crf.appearance_features(image, config.theta_alpha, config.theta_beta)).size
        error = (results["exact"] - results["lattice"]).abs().mean()
        agree = (results["exact"].argmax(0) == results["lattice"].argmax(0)).float()
        print(f"| Grace Hopper {H} x {W} | {H * W} | {points} | {error:.4f} | "
              f"{100 * agree.mean():.2f} % | {results['exact s']:.1f} | "
              f"{results['lattice s']:.1f} |", flush=True)
        rows.append({"image": f"Grace Hopper {H} x {W}", "pixels": H * W,
                     "lattice_points": points, "mean_abs_error": error,
                     "labels_agree": agree.mean(), "exact_cpu_s": results["exact s"],
                     "lattice_cpu_s": results["lattice s"]})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true",
                        help="search the CRF's parameters on the validation split")
    parser.add_argument("--lattice", action="store_true",
                        help="the lattice's error against exact messages only")
    parser.add_argument("--json", type=Path,
                        help="write the tables' figures here (not with --tune)")
    args = parser.parse_args(argv)
    if args.json and args.tune:
        parser.error("--json writes the tables of the default run or --lattice; "
                     "--tune prints its grid only")
    rt = runtime.setup("10_classical_and_crf")
    b = rt.budget
    print(f"profile={rt.profile} CPU={platform.processor() or platform.machine()} "
          f"threads={torch.get_num_threads()} budget={b}", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    results = {}
    if args.lattice:
        results["lattice"] = lattice_error()
    else:
        models = networks(b, rt)
        if args.tune:
            tune(b, rt, models)
        else:
            results["shapes"] = table(b, rt, models)
            results["cells"] = cells_table(rt)
            results["lattice"] = lattice_error()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\nwall time {wall:.0f} s, CPU time {cpu:.0f} s")
    if args.json:
        write_results(args.json, {
            **header("benchmarks.classical_and_crf", rt, b),
            "crf": dataclasses.asdict(crf.SHAPES), "band_px": BAND,
            "training": TRAINING, **results, "wall_s": wall, "cpu_s": cpu})
        print("wrote", args.json)


if __name__ == "__main__":
    main()
