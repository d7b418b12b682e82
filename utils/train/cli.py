"""``python -m utils.train``: train any registered model on any registered dataset.

    python -m utils.train --model tiny_fcn --data shapes --epochs 8 --out runs/tiny
    torchrun --nproc_per_node=2 -m utils.train --model tiny_fcn --out runs/ddp

Writes ``checkpoint.pt`` (after every epoch), ``metrics.csv`` (one row per epoch)
and ``predictions.png`` into ``--out``. Defaults come from the active profile's
``train`` budget (``COURSE_PROFILE`` or ``--profile``). The model decides the
task (semantic, instance or panoptic; its class attribute ``task``) and the
dataset must have targets for it.

Every mistake (an argument, the environment, a checkpoint, a full disk) is one
``error:`` line and exit code 2; a loss that turns non-finite is exit code 1.
``COURSE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from utils import budgets, runtime
from utils.data.registry import DATASETS, DatasetSpec, build_dataset
from utils.models import MODELS, build_model
from utils.train import distributed
from utils.train.checkpoint import CheckpointError, load_checkpoint
from utils.train.config import TrainConfig
from utils.train.fit import fit
from utils.train.loop import evaluate
from utils.train.tasks import InstanceTask, PanopticTask, SemanticTask

MIN_IMAGE_SIZE = 16  # Shapes' smallest image; smaller crops hold too little
MAX_WIDTH = 4.0  # beyond 4x the paper's channels a model no longer fits memory


class UsageError(Exception):
    """A mistake in the command line's arguments or environment."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + error
        self.exit(2, f"error: {message} (see --help)\n")


def _int_in(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an int {bound}, got {value}")
        return value

    return parse


def _positive_float(high: float | None = None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid float value: {text!r}") from None
        if not math.isfinite(value) or value <= 0 or (high is not None
                                                      and value > high):
            bound = f"in (0, {high:g}]" if high is not None else "> 0"
            raise argparse.ArgumentTypeError(
                f"must be a finite number {bound}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m utils.train",
        description="Train a segmentation model and write checkpoint.pt, "
        "metrics.csv and predictions.png into --out. Unset options come from the "
        "profile's 'train' budget. COURSE_DEBUG=1 shows tracebacks.",
    )
    p.add_argument(
        "--model", default="tiny_fcn",
        help=f"model to train, one of: {', '.join(sorted(MODELS))} (default: "
        "tiny_fcn); the model decides the task (semantic, instance, panoptic)")
    p.add_argument(
        "--data", default="shapes",
        help=f"dataset, one of: {', '.join(sorted(DATASETS))} "
        "(default: shapes, built in)")
    p.add_argument(
        "--data-root", type=Path, default=None,
        help="folder prepared by python -m data_scripts.NAME (real datasets)")
    p.add_argument(
        "--out", type=Path, required=True,
        help="folder for checkpoint.pt, metrics.csv and predictions.png")
    p.add_argument("--epochs", type=_int_in(1), help="epochs to train in total")
    p.add_argument(
        "--resume", type=Path, default=None,
        help="checkpoint.pt to continue from (same model, data and settings; "
        "--epochs may grow)")
    p.add_argument(
        "--pretrained", type=Path, default=None,
        help="weights in torchvision's format (see data_scripts.weights)")
    p.add_argument(
        "--profile", choices=budgets.PROFILES, default=None,
        help="budget profile (default: COURSE_PROFILE, else gpu/cpu)")
    p.add_argument("--batch-size", type=_int_in(1),
                   help="images per step, all processes together")
    p.add_argument("--lr", type=_positive_float(), help="peak learning rate (AdamW)")
    p.add_argument("--width", type=_positive_float(MAX_WIDTH),
                   help=f"channel multiplier of the model, in (0, {MAX_WIDTH:g}]")
    p.add_argument("--image-size", type=_int_in(MIN_IMAGE_SIZE, 4096),
                   help=f"training crop / Shapes image size (>= {MIN_IMAGE_SIZE})")
    p.add_argument(
        "--train-size", type=_int_in(1),
        help="training images (Shapes: generated; real data: first N)")
    p.add_argument("--val-size", type=_int_in(1),
                   help="validation images (as --train-size)")
    p.add_argument("--workers", type=_int_in(0, 64), default=0,
                   help="DataLoader workers")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                   help="random seed, in [0, 2**32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--crf", action="store_true",
        help="semantic models: after training, report the validation metrics "
        "without and with utils.crf.dense_crf (utils.crf.SHAPES on shapes, "
        "DeepLab v2's parameters otherwise)")
    return p


def pick(value, default):
    """An option's value, or the budget's when the option was not given (an
    explicit value is never replaced: argparse has already checked it)."""
    return default if value is None else value


def check_out_dir(out: Path) -> None:
    """Create ``out`` and prove it writable before spending time on training.

    The probe file has a unique name, so several torchrun processes can check
    the same folder at once."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(
            f"cannot write to --out {out}: {err.strerror or err}"
        ) from None


def make_task(name: str, spec):
    """The task object and the model's number of classes (and options)."""
    if name == "semantic":
        return SemanticTask(len(spec.classes)), len(spec.classes), {}
    if name == "instance":
        return InstanceTask(len(spec.thing_ids) + 1), len(spec.thing_ids) + 1, {}
    return (PanopticTask(spec.thing_ids, spec.stuff_ids), len(spec.classes),
            {"thing_ids": spec.thing_ids})


@dataclass
class Plan:
    """What the command line resolved from the arguments, the environment and
    the profile's budget, before anything is built."""

    spec: DatasetSpec  # the dataset
    task_name: str  # "semantic", "instance" or "panoptic" (the model's)
    profile: str
    world: int  # processes under torchrun (1 without)
    config: TrainConfig
    meta: dict  # model, data, width, image and data sizes: what a resume must match


def plan(args) -> Plan:
    """Check names and values and fill in the budget's defaults."""
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose from {sorted(MODELS)}")
    if args.data not in DATASETS:
        raise UsageError(
            f"unknown dataset {args.data!r}; choose from {sorted(DATASETS)}"
        )
    task_name = getattr(MODELS[args.model], "task", "semantic")
    spec = DATASETS[args.data].for_task(task_name)  # the task's classes
    if getattr(args, "crf", False) and task_name != "semantic":
        raise UsageError(f"--crf refines semantic models; --model {args.model} is "
                         f"a {task_name} model")
    if task_name not in spec.tasks:
        raise UsageError(f"--model {args.model} is a {task_name} model but --data "
                         f"{args.data} has only {', '.join(spec.tasks)} targets")
    if spec.needs_root and args.data_root is None:
        raise UsageError(
            f"--data {args.data} needs --data-root (prepare it with "
            f"python -m data_scripts.{args.data} --root DIR)"
        )
    try:
        profile = args.profile or runtime.profile()
        world = distributed.requested_world_size()
    except (ValueError, distributed.LaunchError) as err:
        raise UsageError(str(err)) from None
    budget = budgets.budget("train", profile)
    builtin = not spec.needs_root  # generated data has a budgeted size
    meta = {"model": args.model, "data": args.data,
            "width": pick(args.width, budget.width),
            "image_size": pick(args.image_size, budget.image_size),
            "train_size": pick(args.train_size, budget.train_size if builtin else None),
            "val_size": pick(args.val_size, budget.val_size if builtin else None)}
    config = TrainConfig(
        epochs=pick(args.epochs, budget.epochs),
        batch_size=pick(args.batch_size, budget.batch_size),
        lr=pick(args.lr, budget.lr),
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress and profile != "ci",
    )
    if getattr(args, "crf", False) and world > 1:
        raise UsageError("--crf evaluates in one process; run it without torchrun")
    if config.batch_size % world:
        raise UsageError(f"--batch-size {config.batch_size} is not divisible by the "
                         f"{world} processes")
    return Plan(spec, task_name, profile, world, config, meta)


def run(args) -> list[dict]:
    p = plan(args)
    if args.resume is not None:
        check_resume(args, p.meta)
    check_out_dir(args.out)
    try:
        device = distributed.init_from_env() or runtime.device(p.profile)
    except (ValueError, RuntimeError) as err:  # COURSE_DEVICE, torchrun set-up
        raise UsageError(str(err).splitlines()[0]) from None
    runtime.seed_everything(args.seed)
    runtime.set_deterministic(p.profile != "gpu")
    task, num_classes, options = make_task(p.task_name, p.spec)
    train_set, val_set = (
        build_dataset(args.data, split, args.data_root, p.meta["image_size"],
                      p.meta[f"{split}_size"], train=split == "train",
                      task=p.task_name)
        for split in ("train", "val"))
    model = build_model(args.model, num_classes, width=p.meta["width"],
                        profile=p.profile, image_size=p.meta["image_size"],
                        **options)
    if args.pretrained is not None:
        load_pretrained(model, args)
    preflight(model, val_set, task, args)
    if distributed.is_main():
        print(f"{args.model} (width {p.meta['width']}, "
              f"{sum(q.numel() for q in model.parameters()):,} parameters) on "
              f"{args.data} ({p.task_name}): {len(train_set)} train / "
              f"{len(val_set)} val images, profile {p.profile}, device {device}, "
              f"{p.world} process(es)")
    history = fit(model, train_set, val_set, p.config, task=task, device=device,
                  out_dir=args.out, resume=args.resume, meta=p.meta)
    if distributed.is_main() and history:
        save_predictions(model, val_set, p.spec, task, device,
                         args.out / "predictions.png")
        key, label = task.headline
        best = max(history, key=lambda r: r[key] if r[key] == r[key] else -1)
        print(f"best {label} {best[key]:.4f} at epoch {best['epoch']}; wrote "
              f"{args.out / 'checkpoint.pt'}, metrics.csv and predictions.png")
        if args.crf:
            report_crf(model, val_set, args.data, task, p.config, device)
    return history


def report_crf(model, val_set, data: str, task, config: TrainConfig, device) -> dict:
    """The validation metrics of the final model without and with the dense
    CRF (chapter 10), printed as two lines; returns ``{"model": metrics,
    "model + CRF": metrics}``."""
    from utils import crf  # only --crf needs it

    loader = torch.utils.data.DataLoader(val_set, config.batch_size,
                                         collate_fn=task.collate)
    parameters = crf.SHAPES if data == "shapes" else crf.DenseCRFConfig()
    results = {"model": evaluate(model, loader, task, device),
               "model + CRF": evaluate(crf.Refined(model, parameters), loader,
                                       task, device)}
    for name, metrics in results.items():
        print(f"{name:12s} " + ", ".join(
            f"{key} {metrics[key]:.4f}" for key in
            ("miou", "boundary_iou", "pixel_accuracy") if key in metrics))
    return results


def check_resume(args, meta: dict) -> None:
    """The checkpoint must be of this model, data and settings."""
    state = load_checkpoint(args.resume)
    theirs = state.get("meta", {})
    differ = [k for k in meta if theirs.get(k) != meta[k]]
    if differ:
        was = " ".join(f"--{k.replace('_', '-')} {theirs.get(k)}" for k in meta)
        now = " ".join(f"--{k.replace('_', '-')} {meta[k]}" for k in meta)
        raise UsageError(f"{args.resume} was written for {was}, not {now}")


def load_pretrained(model, args) -> None:
    if not hasattr(model, "load_pretrained"):
        raise UsageError(f"model {args.model} has no pretrained weights to load")
    try:
        model.load_pretrained(args.pretrained)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        # The loader lists every bad key on its own line; keep one line.
        text = " ".join(line.strip() for line in str(err).splitlines())
        if len(text) > 300:
            text = text[:300] + " ..."
        raise UsageError(f"--pretrained {args.pretrained}: {text}") from None


def preflight(model, val_set, task, args) -> None:
    """One validation image through the model (eval mode, on the CPU), so that
    a model that cannot take these images fails now, in one line, not after
    the first epoch."""
    import torch

    image, _ = val_set[0]
    model.eval()
    try:
        with torch.no_grad():
            out = model(image[None] if task.name == "semantic" else [image])
    except (RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UsageError(f"--model {args.model} cannot take {list(image.shape)} "
                         f"images: {first}") from None
    if task.name == "semantic":
        want = (1, task.num_classes, *image.shape[1:])
        if tuple(out.shape) != want:
            raise UsageError(f"--model {args.model} gives {list(out.shape)} scores "
                             f"for a {list(image.shape)} image, expected "
                             f"{list(want)}")


def save_predictions(model, dataset, spec, task, device, path, count=4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from utils import plot

    model.eval()
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    images = [image for image, _ in items]
    targets = [target for _, target in items]
    with torch.no_grad():
        if task.name == "semantic":
            preds = [model(image[None].to(device)).argmax(1)[0].cpu()
                     for image in images]
            fig = plot.prediction_grid(images, targets, {"prediction": preds},
                                       spec.palette, spec.classes)
        elif task.name == "instance":
            outputs = model([image.to(device) for image in images])
            fig = plot.detection_grid(images, outputs, spec.instance_classes)
        else:
            outputs = model([image.to(device) for image in images])
            fig = plot.panoptic_grid(images, [t["panoptic"] for t in targets],
                                     [o["panoptic"].cpu() for o in outputs],
                                     spec.palette)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = os.environ.get("COURSE_DEBUG", "") not in ("", "0")
    try:
        run(args)
        distributed.shutdown()
    except (UsageError, CheckpointError, FileNotFoundError, distributed.LaunchError,
            OSError, ValueError) as err:
        if debug:
            raise
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"error: {text}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        if debug:
            raise
        print(f"error: training stopped: {err}", file=sys.stderr)
        return 1
    return 0
