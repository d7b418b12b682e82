import csv
import math
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
from utils.train.checkpoint import content_digest
from utils.train.distributed import EvalShards, train_sampler
from utils.train.tasks import SemanticTask


def data(n=24, size=32):
    cfg = ShapesConfig(image_size=size)
    return Shapes("train", n, cfg), Shapes("val", 8, cfg)


def model():
    torch.manual_seed(0)
    return TinyFCN(NUM_CLASSES, width=0.25)


def instance_data(n=16, size=24):
    """Shapes' instances (labels 1..5) and panoptic targets, from the registry."""
    from utils.data.registry import build_dataset

    return (build_dataset("shapes", "train", image_size=size, length=n, train=True,
                          task="instance"),
            build_dataset("shapes", "val", image_size=size, length=6,
                          task="instance"))


def panoptic_data(n=16, size=24):
    from utils.data.registry import build_dataset

    return (build_dataset("shapes", "train", image_size=size, length=n, train=True,
                          task="panoptic"),
            build_dataset("shapes", "val", image_size=size, length=6,
                          task="panoptic"))


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

    with pytest.raises(FloatingPointError,
                       match="loss is nan at epoch 1, step 1.*learning rate"):
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
    with pytest.raises(ValueError,
                       match=r"labels \[3, 4, 5, 6, 7\], expected \[0, 3\)"):
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

    torch.save({"format": 2, "obj": Arbitrary()}, tmp_path / "evil.pt")
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


def test_every_flipped_byte_of_the_weights_is_caught(tmp_path):
    """A bit flipped in the stored weights still unpickles; the checksum of the
    content is what notices it."""
    path = tmp_path / "c.pt"
    weights = torch.arange(64, dtype=torch.float32)
    save_checkpoint({"model": {"w": weights}, "history": []}, path)
    raw = bytearray(path.read_bytes())
    start = bytes(raw).find(weights.numpy().tobytes())
    assert start > 0, "the weights are stored uncompressed in the zip"
    for offset in (0, 17, 255):
        damaged = bytearray(raw)
        damaged[start + offset] ^= 0x04
        bad = tmp_path / f"bad{offset}.pt"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match="damaged|not a readable"):
            load_checkpoint(bad)


def test_forged_checkpoints_with_valid_checksums_are_refused(tmp_path):
    """Fields of the wrong type, written with a correct checksum, are one
    CheckpointError each, not a traceback later."""
    def forge(**fields):
        body = {"format": 2, "model": {}, "optimizer": {}, "scheduler": {},
                "history": [], "config": {}, "meta": {}, "task": "semantic",
                **fields}
        body["checksum"] = content_digest(body)
        path = tmp_path / "forged.pt"
        torch.save(body, path)
        return path

    for field, value in (("history", {"a": 1}), ("meta", [1]), ("config", "x"),
                         ("optimizer", 3), ("task", 7)):
        with pytest.raises(CheckpointError, match=f"'{field}' is a"):
            load_checkpoint(forge(**{field: value}))
    body = {"format": 2, "history": []}
    body["checksum"] = "0" * 64
    torch.save(body, tmp_path / "wrongsum.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "wrongsum.pt")


def test_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"history": [1]}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="disk is full.*previous checkpoint"):
        save_checkpoint({"history": [1, 2]}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["history"] == [1]
    assert list(tmp_path.iterdir()) == [path]


def test_leftovers_of_a_killed_save_are_removed_and_reported(tmp_path):
    path = tmp_path / "checkpoint.pt"
    (tmp_path / "checkpoint.pt.abc123.tmp").write_bytes(b"x" * 1000)
    (tmp_path / "other.tmp").write_bytes(b"keep me")
    said = []
    save_checkpoint({"history": []}, path, log=said.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "other.tmp"]
    assert len(said) == 1 and "checkpoint.pt.abc123.tmp" in said[0]


def test_resume_refuses_other_settings_and_notes_longer_runs(tmp_path):
    train, val = data()
    fit(model(), train, val, TrainConfig(epochs=1, batch_size=8, progress=False),
        num_classes=NUM_CLASSES, device="cpu", out_dir=tmp_path, log=quiet)
    ckpt = tmp_path / "checkpoint.pt"
    for change in ({"batch_size": 4}, {"lr": 1e-2}, {"seed": 1}):
        config = TrainConfig(**{"epochs": 2, "batch_size": 8, "progress": False,
                                **change})
        with pytest.raises(CheckpointError, match=list(change)[0]):
            fit(model(), train, val, config, num_classes=NUM_CLASSES, device="cpu",
                resume=ckpt, log=quiet)
    said = []
    history = fit(model(), train, val,
                  TrainConfig(epochs=2, batch_size=8, progress=False),
                  num_classes=NUM_CLASSES, device="cpu", resume=ckpt,
                  log=said.append)
    assert len(history) == 2 and any("planned for 1 epochs" in s for s in said)
    with pytest.raises(CheckpointError, match="semantic model, not of a instance"):
        from tiny_models import TinyInstance

        from utils.train import InstanceTask
        fit(TinyInstance(6), *instance_data(8), TrainConfig(epochs=2, batch_size=8,
                                                            progress=False),
            task=InstanceTask(6), device="cpu", resume=ckpt, log=quiet)


def test_optimiser_state_of_the_wrong_shape_is_refused(tmp_path):
    train, val = data()
    config = TrainConfig(epochs=1, batch_size=8, progress=False)
    fit(model(), train, val, config, num_classes=NUM_CLASSES, device="cpu",
        out_dir=tmp_path, log=quiet)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    first = next(iter(state["optimizer"]["state"].values()))
    first["exp_avg"] = torch.zeros(3)
    save_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not fit.*exp_avg"):
        fit(model(), train, val, TrainConfig(epochs=2, batch_size=8, progress=False),
            num_classes=NUM_CLASSES, device="cpu", resume=tmp_path / "bad.pt",
            log=quiet)


def test_samplers_split_global_batches():
    """DistributedSampler's training shards make up the single-process
    batches; the evaluation shards cover every item exactly once."""
    n, world, batch = 20, 2, 4
    items = list(range(n))

    def shards(w, r):
        import unittest.mock as mock

        with mock.patch("utils.train.distributed.world_size", return_value=w), \
                mock.patch("utils.train.distributed.rank", return_value=r):
            sampler = train_sampler(items, seed=3)
        sampler.set_epoch(2)
        return list(sampler)

    single = shards(1, 0)
    ranks = [shards(world, r) for r in range(world)]
    per_rank = batch // world
    for k in range(n // batch):
        union = sorted(sum((s[k * per_rank : (k + 1) * per_rank] for s in ranks), []))
        assert union == sorted(single[k * batch : (k + 1) * batch])
    val = [list(EvalShards(9, rank_=r, world=2)) for r in range(2)]
    assert sorted(val[0] + val[1]) == list(range(9))  # every item exactly once
    assert [len(EvalShards(9, rank_=r, world=2)) for r in range(2)] == [5, 4]


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
    # The whole stderr of every rank: a failure's cause must not be cut off.
    assert two.returncode == 0, f"torchrun exited {two.returncode}:\n{two.stderr}"
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
    single = evaluate(model, loader, SemanticTask(NUM_CLASSES), "cpu")
    reported = result["history"][0]
    assert reported["miou"] == pytest.approx(single["miou"], abs=1e-12)
    assert reported["boundary_iou"] == pytest.approx(single["boundary_iou"],
                                                     abs=1e-12)
    # The loss is a mean of per-batch means, which weight images by their
    # non-void pixels: batches of 2 + 1 and 2 images differ slightly from 5.
    assert reported["val_loss"] == pytest.approx(single["val_loss"], rel=1e-3)


def _task_worker(rank, world, rendezvous, kind, out):
    """fit() on the instance or panoptic path in one of ``world`` processes."""
    from tiny_models import TinyInstance, TinyPanoptic

    from utils.data.shapes import STUFF_IDS, THING_IDS
    from utils.train import InstanceTask, PanopticTask

    if world > 1:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        if kind == "instance":
            net, task = TinyInstance(6), InstanceTask(6)
            train, val = instance_data()
        else:
            net, task = TinyPanoptic(NUM_CLASSES, thing_ids=THING_IDS), \
                PanopticTask(THING_IDS, STUFF_IDS)
            train, val = panoptic_data()
        history = fit(net, train, val, TrainConfig(epochs=2, batch_size=4, lr=1e-2,
                                                   progress=False),
                      task=task, device="cpu", log=quiet)
        if rank == 0:
            torch.save({"history": history, "model": net.state_dict()}, out)
    finally:
        if world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _run_processes(world, tmp_path, kind):
    import torch.multiprocessing as mp

    out = tmp_path / f"{kind}-{world}.pt"
    if world == 1:
        _task_worker(0, 1, None, kind, out)
        return torch.load(out)
    context = mp.start_processes(_task_worker,
                                 args=(world, tmp_path / f"rdzv-{kind}", kind, out),
                                 nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"2-process {kind} training did not finish in 180 s")
    return torch.load(out)


@pytest.mark.parametrize("kind, columns", [
    ("instance", ("loss_classifier", "loss_mask", "box_ap", "box_ap50", "mask_ap",
                  "mask_ap50")),
    ("panoptic", ("loss_semantic", "loss_things", "pq", "sq", "rq", "pq_things",
                  "pq_stuff")),
])
def test_instance_and_panoptic_tasks_train_log_terms_and_agree_over_ranks(
        tmp_path, kind, columns):
    """Each loss term and metric is its own column; two gloo processes report
    what one process does (the tiny models' losses are means over images)."""
    one = _run_processes(1, tmp_path, kind)
    two = _run_processes(2, tmp_path, kind)
    rows = one["history"]
    assert list(rows[0]) == ["epoch", "train_loss", *columns, "lr", "seconds"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    terms = [c for c in columns if c.startswith("loss_")]
    for row in rows:
        assert row["train_loss"] == pytest.approx(sum(row[c] for c in terms))
    for a, b in zip(rows, two["history"]):
        for key in columns:
            assert a[key] == pytest.approx(b[key], abs=1e-5, nan_ok=True), key
    for name, w in one["model"].items():
        assert torch.allclose(w, two["model"][name], atol=1e-5), name


def test_instance_metrics_are_coco_ap_of_the_outputs():
    """evaluate() on the instance task scores the model's own outputs: a model
    that returns the ground truth gets AP 1."""
    from utils.train import InstanceTask

    class Oracle(torch.nn.Module):
        task = "instance"

        def __init__(self, truth):
            super().__init__()
            self.truth = truth

        def forward(self, images, targets=None):
            return [{**t, "scores": torch.ones(len(t["labels"])),
                     "masks": t["masks"][:, None].float()} for t in self.truth]

    _, val = instance_data()
    items = [val[i] for i in range(len(val))]
    loader = [([im for im, _ in items], [t for _, t in items])]
    out = evaluate(Oracle([t for _, t in items]), loader, InstanceTask(6), "cpu")
    assert out["box_ap"] == pytest.approx(1.0) and out["mask_ap"] == pytest.approx(1.0)


def test_instance_run_resumes_exactly(tmp_path):
    from tiny_models import TinyInstance

    from utils.train import InstanceTask

    train, val = instance_data()
    config = TrainConfig(epochs=3, batch_size=4, lr=1e-2, progress=False)

    def run(**kw):
        torch.manual_seed(0)
        return fit(TinyInstance(6), train, val, config, task=InstanceTask(6),
                   device="cpu", **kw)

    straight = run(log=quiet)

    def dies_after_epoch_one(message):
        if message.startswith("epoch 1/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        run(out_dir=tmp_path / "run", log=dies_after_epoch_one)
    resumed = run(out_dir=tmp_path / "run", resume=tmp_path / "run/checkpoint.pt",
                  log=quiet)
    for a, b in zip(straight, resumed):
        for key in ("train_loss", "loss_classifier", "loss_mask", "box_ap",
                    "mask_ap", "lr"):
            assert a[key] == b[key], key
    header = read_rows(tmp_path / "run/metrics.csv")[0]
    assert list(header)[:4] == ["epoch", "train_loss", "loss_classifier",
                                "loss_mask"]


def test_bfloat16_autocast_path_runs_on_the_cpu():
    """The mixed-precision code path (autocast; bfloat16 is what the CPU
    offers) trains: the convolutions run in bfloat16, the loss is float32 and
    finite, and the result stays close to full precision."""
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyFCN(NUM_CLASSES, width=0.25)

        def forward(self, x):
            out = self.net(x)
            seen.append(out.dtype)
            return out

    train, val = data(16)
    results = {}
    for amp in (True, False):
        torch.manual_seed(0)
        seen.clear()
        config = TrainConfig(epochs=2, batch_size=8, progress=False, amp=amp)
        results[amp] = fit(Probe(), train, val, config, num_classes=NUM_CLASSES,
                           device="cpu", log=quiet)
        assert set(seen) == ({torch.bfloat16} if amp else {torch.float32})
    for a, b in zip(results[True], results[False]):
        assert math.isfinite(a["train_loss"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
