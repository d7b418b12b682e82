"""Every mistake on ``python -m utils.train``'s command line, in its environment
or in the files it is handed, is one ``error:`` line, never a traceback and
never a silent fallback. Each case below is a bad input a careless user or an
attacker could give; ``BAD_INPUTS`` counts them for the README."""

from __future__ import annotations

import errno
import threading

import pytest
import torch

from utils.models import MODELS
from utils.train import load_checkpoint, save_checkpoint
from utils.train.checkpoint import content_digest
from utils.train.cli import check_out_dir, main

TINY = ["--epochs", "1", "--train-size", "8", "--val-size", "2", "--image-size",
        "32", "--batch-size", "8", "--width", "0.25", "--no-progress"]

# (arguments after --out, what the error line must say); TINY is appended
ARGUMENT_ERRORS = [
    (["--epochs", "-1"], "--epochs: must be an int >= 1"),
    (["--epochs", "0"], "--epochs: must be an int >= 1"),
    (["--epochs", "1.5"], "--epochs: invalid int value"),
    (["--epochs", "nan"], "--epochs: invalid int value"),
    (["--batch-size", "-8"], "--batch-size: must be an int >= 1"),
    (["--batch-size", "0"], "--batch-size: must be an int >= 1"),
    (["--lr", "nan"], "--lr: must be a finite number > 0"),
    (["--lr", "inf"], "--lr: must be a finite number > 0"),
    (["--lr", "0"], "--lr: must be a finite number > 0"),
    (["--lr", "-0.1"], "--lr: must be a finite number > 0"),
    (["--lr", "fast"], "--lr: invalid float value"),
    (["--width", "nan"], "--width: must be a finite number in (0, 4]"),
    (["--width", "-1"], "--width: must be a finite number in (0, 4]"),
    (["--width", "0"], "--width: must be a finite number in (0, 4]"),
    (["--width", "100"], "--width: must be a finite number in (0, 4]"),
    (["--image-size", "1"], "--image-size: must be an int in [16, 4096]"),
    (["--image-size", "0"], "--image-size: must be an int in [16, 4096]"),
    (["--image-size", "100000"], "--image-size: must be an int in [16, 4096]"),
    (["--seed", str(2**32)], "--seed: must be an int in [0, 4294967295]"),
    (["--seed", "-1"], "--seed: must be an int in [0, 4294967295]"),
    (["--train-size", "0"], "--train-size: must be an int >= 1"),
    (["--val-size", "-3"], "--val-size: must be an int >= 1"),
    (["--workers", "-1"], "--workers: must be an int in [0, 64]"),
    (["--profile", "bogus"], "--profile: invalid choice"),
    (["--model", "unet9000"], "unknown model 'unet9000'"),
    (["--data", "imagenet"], "unknown dataset 'imagenet'"),
    (["--data", "voc"], "--data voc needs --data-root"),
    (["--data", "voc", "--data-root", "/nonexistent/voc"], "is not a directory"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--resume", "/nonexistent/checkpoint.pt"], "does not exist"),
    (["--model", "fcn8s", "--pretrained", "/nonexistent/vgg16.pth"],
     "no weight file"),
    (["--model", "tiny_fcn", "--pretrained", "/nonexistent/w.pth"],
     "has no pretrained weights"),
]

ENVIRONMENT_ERRORS = [
    ({"COURSE_PROFILE": "bogus"}, "COURSE_PROFILE='bogus' is not a profile"),
    ({"COURSE_DEVICE": "tpu"}, "COURSE_DEVICE='tpu'"),
    ({"COURSE_DEVICE": "gpu0"}, "COURSE_DEVICE='gpu0' is not a device"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 but RANK"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a number"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' must be at least 1"),
]
if not torch.cuda.is_available():
    ENVIRONMENT_ERRORS += [
        ({"COURSE_DEVICE": "cuda"}, "CUDA is not available"),
        ({"COURSE_DEVICE": "cuda:3"}, "CUDA is not available"),
    ]


def one_line_error(capsys, argv, code=2) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def parse_error(capsys, argv) -> str:
    """argparse's own errors exit through SystemExit(2) with one line."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("args, says", ARGUMENT_ERRORS,
                         ids=[" ".join(a) for a, _ in ARGUMENT_ERRORS])
def test_bad_arguments(tmp_path, capsys, args, says):
    argv = ["--out", str(tmp_path / "run"), *TINY, *args]
    try:
        line = one_line_error(capsys, argv)
    except SystemExit as exit_:  # argparse: already one line, exit code 2
        assert exit_.code == 2
        line = capsys.readouterr().err.strip()
        assert len(line.splitlines()) == 1 and line.startswith("error: ")
    assert says in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_out_is_required(capsys):
    assert "--out" in parse_error(capsys, TINY)


@pytest.mark.parametrize("env, says", ENVIRONMENT_ERRORS,
                         ids=[str(e) for e, _ in ENVIRONMENT_ERRORS])
def test_bad_environment(tmp_path, capsys, monkeypatch, env, says):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RANK", raising=False)
    line = one_line_error(capsys, ["--out", str(tmp_path), *TINY])
    assert says in line


def test_out_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker, blocker / "run", "/proc/no-such-thing/run"):
        line = one_line_error(capsys, ["--out", str(out), *TINY])
        assert "cannot write to --out" in line


def test_data_root_that_is_a_file(tmp_path, capsys):
    root = tmp_path / "voc"
    root.write_text("not a folder")
    line = one_line_error(capsys, ["--out", str(tmp_path / "run"), "--data", "voc",
                                   "--data-root", str(root), *TINY])
    assert "is not a directory" in line


def test_write_test_is_safe_for_many_processes_at_once(tmp_path):
    """torchrun's ranks check --out at the same moment: no probe of one rank
    may be removed by another (a fixed probe name failed 2 of 50 runs)."""
    errors = []

    def probe():
        try:
            for _ in range(200):
                check_out_dir(tmp_path / "out")
        except Exception as err:  # any failure at all
            errors.append(err)

    threads = [threading.Thread(target=probe) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 1-epoch run to forge damaged checkpoints from."""
    out = tmp_path_factory.mktemp("trained")
    assert main(["--out", str(out), *TINY]) == 0
    return out / "checkpoint.pt"


def _forge(path, tmp_path, name, edit):
    state = load_checkpoint(path)
    edit(state)
    state.pop("format", None)
    forged = tmp_path / name
    save_checkpoint(state, forged)
    return forged


def _flip(path, tmp_path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    out = tmp_path / "flipped.pt"
    out.write_bytes(bytes(raw))
    return out


CHECKPOINT_ERRORS = [
    ("junk", lambda p, d: (d / "j.pt").write_bytes(b"junk") and d / "j.pt",
     "not a readable checkpoint"),
    ("truncated", lambda p, d: (d / "t.pt").write_bytes(p.read_bytes()[:500])
     and d / "t.pt", "not a readable checkpoint"),
    ("a folder", lambda p, d: d, "does not exist"),
    ("one flipped byte", _flip, "damaged|not a readable"),
    ("history of strings", lambda p, d: _forge(
        p, d, "h.pt", lambda s: s.update(history=[{"epoch": "one"}])),
     "history is not a list of rows of numbers"),
    ("meta a list", lambda p, d: _forge(p, d, "m.pt", lambda s: s.update(meta=[1])),
     "'meta' is a list"),
    ("optimiser state of the wrong shape", lambda p, d: _forge(
        p, d, "o.pt", lambda s: next(iter(s["optimizer"]["state"].values())).update(
            exp_avg=torch.zeros(3))), "does not fit"),
    ("weights of the wrong shape", lambda p, d: _forge(
        p, d, "w.pt", lambda s: s["model"].update(
            {next(iter(s["model"])): torch.zeros(1)})), "does not fit"),
    ("another model's", lambda p, d: _forge(
        p, d, "x.pt", lambda s: s["meta"].update(model="fcn8s")),
     "was written for --model fcn8s"),
    ("another task's", lambda p, d: _forge(
        p, d, "k.pt", lambda s: s.update(task="instance")), "of a instance model"),
    ("config of another batch size", lambda p, d: _forge(
        p, d, "c.pt", lambda s: s["config"].update(batch_size=4)), "batch_size: 4"),
]


@pytest.mark.parametrize("name, make, says", CHECKPOINT_ERRORS,
                         ids=[c[0] for c in CHECKPOINT_ERRORS])
def test_bad_checkpoints(trained, tmp_path, capsys, name, make, says):
    bad = make(trained, tmp_path)
    import re

    line = one_line_error(capsys, ["--out", str(tmp_path / "run"), "--resume",
                                   str(bad), *TINY, "--epochs", "2"])
    assert re.search(says, line), line


def test_resume_with_another_learning_rate_is_refused(trained, tmp_path, capsys):
    line = one_line_error(capsys, ["--out", str(tmp_path), "--resume", str(trained),
                                   *TINY, "--epochs", "2", "--lr", "0.1"])
    assert "other settings (lr:" in line


def test_full_disk_at_checkpoint_time(tmp_path, capsys, monkeypatch):
    def no_space(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    line = one_line_error(capsys, ["--out", str(tmp_path), *TINY])
    assert "disk is full" in line
    assert not list(tmp_path.glob("*.tmp"))


def test_model_that_cannot_take_the_images_fails_before_training(
        tmp_path, capsys, monkeypatch):
    class NeedsBigImages(torch.nn.Module):
        def __init__(self, num_classes, width=1.0):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, num_classes, 33)

        def forward(self, x):
            return self.conv(x)

    monkeypatch.setitem(MODELS, "needs_big", NeedsBigImages)
    line = one_line_error(capsys, ["--out", str(tmp_path), "--model", "needs_big",
                                   *TINY])
    assert "cannot take [3, 32, 32] images" in line
    monkeypatch.setitem(MODELS, "wrong_size", lambda k, width=1.0:
                        torch.nn.Conv2d(3, k, 3))
    line = one_line_error(capsys, ["--out", str(tmp_path), "--model", "wrong_size",
                                   *TINY])
    assert "gives [1, 8, 30, 30] scores" in line


def test_task_the_data_cannot_give(tmp_path, capsys, monkeypatch):
    from tiny_models import TinyInstance

    monkeypatch.setitem(MODELS, "tiny_instance", TinyInstance)
    line = one_line_error(capsys, ["--out", str(tmp_path), "--model", "tiny_instance",
                                   "--data", "voc", "--data-root", str(tmp_path),
                                   *TINY])
    assert "is a instance model but --data voc has only semantic targets" in line


def test_loss_turning_nan_is_one_line(tmp_path, capsys):
    line = one_line_error(capsys, ["--out", str(tmp_path), *TINY, "--lr", "1e30",
                                   "--epochs", "2"],
                          code=1)
    assert "training stopped" in line


def test_checksum_covers_the_checkpoint_fields(trained):
    state = load_checkpoint(trained)
    before = content_digest(state)
    state["history"][0]["miou"] += 1e-12
    assert content_digest(state) != before


BAD_INPUTS = (len(ARGUMENT_ERRORS) + 1 + len(ENVIRONMENT_ERRORS) + 3 + 1
              + len(CHECKPOINT_ERRORS) + 1 + 1 + 2 + 1 + 1)
