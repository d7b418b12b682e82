import csv
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from utils.data.shapes import NUM_CLASSES, Shapes, ShapesConfig
from utils.models import TinyFCN
from utils.train import (
    CheckpointError,
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
)
from utils.train.distributed import ShardedSampler


def data(n=24, size=32):
    cfg = ShapesConfig(image_size=size)
    return Shapes("train", n, cfg), Shapes("val", 8, cfg)


def model():
    torch.manual_seed(0)
    return TinyFCN(NUM_CLASSES, width=0.25)


CONFIG = TrainConfig(epochs=3, batch_size=8, lr=5e-3, progress=False)


def quiet(*_):
    pass


class Interrupt(Exception):
    pass


class Arbitrary:
    """An object that weights_only loading must refuse to unpickle."""


def test_interrupted_and_resumed_run_gives_the_same_losses(tmp_path):
    train, val = data()
    straight = fit(
        model(), train, val, CONFIG, num_classes=NUM_CLASSES, device="cpu", log=quiet
    )

    calls = {"n": 0}

    def dies_in_epoch_three(logits, target):
        calls["n"] += 1
        # 3 training steps and 1 validation batch per epoch: step 2 of epoch 3.
        if calls["n"] == 2 * 4 + 2:
            raise Interrupt
        return F.cross_entropy(logits, target, ignore_index=255)

    with pytest.raises(Interrupt):
        fit(
            model(),
            train,
            val,
            CONFIG,
            num_classes=NUM_CLASSES,
            device="cpu",
            out_dir=tmp_path,
            loss_fn=dies_in_epoch_three,
            log=quiet,
        )
    assert len(load_checkpoint(tmp_path / "checkpoint.pt")["history"]) == 2

    resumed = fit(
        model(),
        train,
        val,
        CONFIG,
        num_classes=NUM_CLASSES,
        device="cpu",
        out_dir=tmp_path,
        resume=tmp_path / "checkpoint.pt",
        log=quiet,
    )
    for a, b in zip(straight, resumed):
        for key in ("train_loss", "val_loss", "miou", "lr"):
            assert a[key] == b[key], (key, a, b)
    rows = read_rows(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["miou"]) == pytest.approx(straight[-1]["miou"])
    assert not list(tmp_path.glob("*.tmp")), "a temporary file was left behind"


def test_non_finite_loss_stops_with_a_clear_message():
    train, val = data(8)

    def nan_loss(logits, target):
        return logits.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="epoch 1, step 1.*learning rate"):
        fit(
            model(),
            train,
            val,
            TrainConfig(epochs=1, batch_size=8, progress=False),
            num_classes=NUM_CLASSES,
            device="cpu",
            loss_fn=nan_loss,
            log=quiet,
        )


def test_labels_out_of_range_are_named():
    train, val = data(8)
    with pytest.raises(ValueError, match=r"labels \[3, 4, 5, 6, 7\] outside \[0, 3\)"):
        fit(
            TinyFCN(3, width=0.25),
            train,
            val,
            TrainConfig(epochs=1, batch_size=8, progress=False),
            num_classes=3,
            device="cpu",
            log=quiet,
        )


def test_checkpoints_are_atomic_and_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "history": [{"miou": 0.5}]}, path)
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))

    torch.save({"format": 1, "obj": Arbitrary()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this course"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"history": [1]}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"history": [1, 2]}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["history"] == [1]
    assert list(tmp_path.iterdir()) == [path]


def test_sharded_sampler_splits_global_batches():
    n, world, batch = 20, 2, 4
    single = list(
        ShardedSampler(n, True, seed=3, drop_remainder=True, rank_=0, world=1)
    )
    shards = [
        list(ShardedSampler(n, True, seed=3, drop_remainder=True, rank_=r, world=world))
        for r in range(world)
    ]
    per_rank = batch // world
    for k in range(n // batch):
        union = sorted(sum((s[k * per_rank : (k + 1) * per_rank] for s in shards), []))
        assert union == sorted(single[k * batch : (k + 1) * batch])
    val = [list(ShardedSampler(9, False, rank_=r, world=2)) for r in range(2)]
    assert sorted(val[0] + val[1]) == list(range(9))  # every item exactly once


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_gloo_processes_agree_with_one(tmp_path):
    args = [
        "--model",
        "tiny_fcn",
        "--data",
        "shapes",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--train-size",
        "32",
        "--val-size",
        "9",
        "--image-size",
        "32",
        "--width",
        "0.25",
        "--no-progress",
    ]
    env_cmd = [sys.executable, "-m"]
    one = subprocess.run(
        env_cmd + ["utils.train", "--out", str(tmp_path / "one"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        env_cmd
        + [
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "utils.train",
            "--out",
            str(tmp_path / "two"),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 process(es)" in two.stdout
    assert two.stdout.count("epoch 1/2") == 1, "only rank 0 prints"
    rows_one, rows_two = (
        read_rows(tmp_path / "one/metrics.csv"),
        read_rows(tmp_path / "two/metrics.csv"),
    )
    assert len(rows_one) == len(rows_two) == 2
    for a, b in zip(rows_one, rows_two):
        for key in ("train_loss", "val_loss", "miou", "pixel_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4), key
    w1 = load_checkpoint(tmp_path / "one/checkpoint.pt")["model"]
    w2 = load_checkpoint(tmp_path / "two/checkpoint.pt")["model"]
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-4), name


class BatchNormNet(torch.nn.Module):
    """A model with buffers (BatchNorm running statistics)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, NUM_CLASSES, 1),
        )

    def forward(self, x):
        return self.body(x)


def _ddp_worker(rank, rendezvous, out):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2
    )
    try:
        torch.manual_seed(0)
        train = Shapes("train", 8, ShapesConfig(image_size=16))
        val = Shapes("val", 5, ShapesConfig(image_size=16))  # shards of 3 and 2
        config = TrainConfig(epochs=1, batch_size=4, progress=False)
        model = BatchNormNet()
        history = fit(model, train, val, config, num_classes=NUM_CLASSES,
                      device="cpu", log=quiet)
        if rank == 0:
            torch.save({"history": history, "model": model.state_dict()}, out)
        torch.distributed.barrier()  # tear down together (gloo aborts otherwise)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_metrics_belong_to_the_saved_model(tmp_path):
    """Two ranks with BatchNorm statistics of their own and uneven validation
    shards report exactly the metrics of rank 0's model, the one saved."""
    import torch.multiprocessing as mp

    out = tmp_path / "result.pt"
    context = mp.start_processes(_ddp_worker, args=(tmp_path / "rdzv", out),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("2-process training did not finish in 120 s")
    result = torch.load(out)
    model = BatchNormNet()
    model.load_state_dict(result["model"])
    val = Shapes("val", 5, ShapesConfig(image_size=16))
    loader = torch.utils.data.DataLoader(val, batch_size=5)
    single = evaluate(model, loader, NUM_CLASSES, "cpu")
    reported = result["history"][0]
    assert reported["miou"] == pytest.approx(single["mean_iou"], abs=1e-12)
    # The loss is a mean of per-batch means, which weight images by their
    # non-void pixels: batches of 2 + 1 and 2 images differ slightly from 5.
    assert reported["val_loss"] == pytest.approx(single["loss"], rel=1e-3)
