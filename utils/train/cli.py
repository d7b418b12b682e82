"""``python -m utils.train``: train any registered model on any registered dataset.

    python -m utils.train --model tiny_fcn --data shapes --epochs 8 --out runs/tiny
    torchrun --nproc_per_node=2 -m utils.train --model tiny_fcn --out runs/ddp

Writes ``checkpoint.pt`` (after every epoch), ``metrics.csv`` (one row per epoch)
and ``predictions.png`` into ``--out``. Defaults come from the active profile's
``train`` budget (``COURSE_PROFILE`` or ``--profile``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

from utils import budgets, runtime
from utils.data.registry import DATASETS, build_dataset, pad_collate
from utils.models import MODELS, build_model
from utils.train import distributed
from utils.train.checkpoint import CheckpointError, load_checkpoint
from utils.train.config import TrainConfig
from utils.train.loop import fit, predict


class UsageError(Exception):
    """A mistake in the command line's arguments or environment."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + error
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m utils.train",
        description="Train a segmentation model and write checkpoint.pt, "
        "metrics.csv and predictions.png into --out. Unset options come from the "
        "profile's 'train' budget.",
    )
    p.add_argument(
        "--model",
        default="tiny_fcn",
        help=f"model to train, one of: {', '.join(sorted(MODELS))} (default: tiny_fcn)",
    )
    p.add_argument(
        "--data",
        default="shapes",
        help=f"dataset, one of: {', '.join(sorted(DATASETS))} "
        "(default: shapes, built in)",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder prepared by python -m data_scripts.NAME (real datasets)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for checkpoint.pt, metrics.csv and predictions.png",
    )
    p.add_argument("--epochs", type=int, help="epochs to train in total")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="checkpoint.pt to continue from (same model, data and width)",
    )
    p.add_argument(
        "--pretrained",
        type=Path,
        default=None,
        help="backbone weights in torchvision's format (see data_scripts)",
    )
    p.add_argument(
        "--profile",
        choices=runtime.PROFILES,
        default=None,
        help="budget profile (default: COURSE_PROFILE, else gpu/cpu)",
    )
    p.add_argument("--batch-size", type=int, help="images per step, all processes")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    p.add_argument("--width", type=float, help="channel multiplier of the model")
    p.add_argument("--image-size", type=int, help="training crop / Shapes image size")
    p.add_argument(
        "--train-size",
        type=int,
        help="training images (Shapes: generated; real data: first N)",
    )
    p.add_argument("--val-size", type=int, help="validation images (as --train-size)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_out_dir(out: Path) -> None:
    """Create ``out`` and prove it writable before spending time on training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UsageError(
            f"cannot write to --out {out}: {err.strerror or err}"
        ) from None


def run(args) -> list[dict]:
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose from {sorted(MODELS)}")
    if args.data not in DATASETS:
        raise UsageError(
            f"unknown dataset {args.data!r}; choose from {sorted(DATASETS)}"
        )
    spec = DATASETS[args.data]
    if spec.needs_root and args.data_root is None:
        raise UsageError(
            f"--data {args.data} needs --data-root (prepare it with "
            f"python -m data_scripts.{args.data} --root DIR)"
        )
    profile = args.profile or runtime.profile()
    budget = budgets.budget("train", profile)
    width = args.width or budget.width
    image_size = args.image_size or budget.image_size
    meta = {"model": args.model, "data": args.data, "width": width}

    if args.resume is not None:
        state = load_checkpoint(args.resume)
        theirs = state.get("meta", {})
        if {k: theirs.get(k) for k in meta} != meta:
            raise UsageError(
                f"{args.resume} was written for --model {theirs.get('model')} --data "
                f"{theirs.get('data')} --width {theirs.get('width')}, not --model "
                f"{args.model} --data {args.data} --width {width}"
            )
    check_out_dir(args.out)

    device = distributed.init_from_env() or runtime.device(profile)
    runtime.seed_everything(args.seed)
    runtime.set_deterministic(profile != "gpu")
    shapes_like = not spec.needs_root
    train_len = args.train_size or (budget.train_size if shapes_like else None)
    val_len = args.val_size or (budget.val_size if shapes_like else None)
    train_set = build_dataset(
        args.data, "train", args.data_root, image_size, train_len, train=True
    )
    val_set = build_dataset(args.data, "val", args.data_root, image_size, val_len)

    model = build_model(args.model, len(spec.classes), width=width)
    if args.pretrained is not None:
        if not hasattr(model, "load_pretrained"):
            raise UsageError(f"model {args.model} has no pretrained weights to load")
        try:
            model.load_pretrained(args.pretrained)
        except (ValueError, TypeError, RuntimeError) as err:
            # The loader lists every bad key on its own line; keep one line.
            text = " ".join(line.strip() for line in str(err).splitlines())
            if len(text) > 300:
                text = text[:300] + " ..."
            raise UsageError(f"--pretrained {args.pretrained}: {text}") from None

    config = TrainConfig(
        epochs=args.epochs or budget.epochs,
        batch_size=args.batch_size or budget.batch_size,
        lr=args.lr or budget.lr,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress and profile != "ci",
    )
    if distributed.is_main():
        print(
            f"{args.model} (width {width}, "
            f"{sum(p.numel() for p in model.parameters()):,} parameters) on "
            f"{args.data}: {len(train_set)} train / {len(val_set)} val images, "
            f"profile {profile}, device {device}, {distributed.world_size()} "
            f"process(es)"
        )
    history = fit(
        model,
        train_set,
        val_set,
        config,
        num_classes=len(spec.classes),
        device=device,
        out_dir=args.out,
        resume=args.resume,
        collate_fn=pad_collate,
        meta=meta,
    )
    if distributed.is_main() and history:
        save_predictions(model, val_set, spec, device, args.out / "predictions.png")
        best = max(history, key=lambda r: r["miou"])
        print(
            f"best mIoU {best['miou']:.4f} at epoch {best['epoch']}; wrote "
            f"{args.out / 'checkpoint.pt'}, metrics.csv and predictions.png"
        )
    return history


def save_predictions(model, dataset, spec, device, path, count=4) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.plot import prediction_grid

    items = [dataset[i] for i in range(min(count, len(dataset)))]
    images = [image for image, _ in items]
    targets = [target for _, target in items]
    preds = [predict(model, image[None], device)[0] for image in images]
    fig = prediction_grid(images, targets, preds, spec.palette, spec.classes)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
        # Rank 0 still writes predictions.png; gloo aborts a process whose
        # group is torn down while a peer is busy, so all ranks finish together.
        distributed.barrier()
    except (UsageError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: training stopped: {err}", file=sys.stderr)
        return 1
    finally:
        if distributed.world_size() > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0
