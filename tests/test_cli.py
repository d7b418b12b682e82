import csv
import subprocess
import sys
import time

import torch

from conftest import ROOT
from utils.train import load_checkpoint
from utils.train.cli import build_parser, main

TINY = [
    "--epochs",
    "1",
    "--train-size",
    "16",
    "--val-size",
    "4",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--width",
    "0.25",
    "--no-progress",
]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_trains_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["--model", "tiny_fcn", "--data", "shapes", "--out", str(out), *TINY]) == 0
    )
    printed = capsys.readouterr().out
    assert "best mIoU" in printed and "epoch 1/1" in printed
    rows = read_rows(out / "metrics.csv")
    assert len(rows) == 1 and 0 <= float(rows[0]["miou"]) <= 1
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["meta"] == {"model": "tiny_fcn", "data": "shapes", "width": 0.25,
                             "image_size": 32, "train_size": 16, "val_size": 4}
    assert state["task"] == "semantic"
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "miou",
                             "boundary_iou", "pixel_accuracy", "mean_dice", "lr",
                             "seconds"]


def test_killed_run_resumes_exactly(tmp_path):
    """SIGKILL a run after its first checkpoint, resume it with the same
    arguments, and get the numbers of a run that was never interrupted."""
    args = [
        "--epochs",
        "3",
        "--train-size",
        "48",
        "--val-size",
        "4",
        "--image-size",
        "48",
        "--batch-size",
        "8",
        "--width",
        "0.25",
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "utils.train", "--out", str(killed), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done = len(load_checkpoint(killed / "checkpoint.pt")["history"])
    assert 1 <= done < 3, "the run finished before it could be killed"
    assert (
        main(["--out", str(killed), "--resume", str(killed / "checkpoint.pt"), *args])
        == 0
    )
    straight = tmp_path / "straight"
    assert main(["--out", str(straight), *args]) == 0
    resumed = read_rows(killed / "metrics.csv")
    fresh = read_rows(straight / "metrics.csv")
    for key in ("train_loss", "val_loss", "miou", "lr"):
        assert [r[key] for r in resumed] == [r[key] for r in fresh], key


def test_unknown_names(tmp_path, capsys):
    line = one_line_error(capsys, ["--model", "unet9000", "--out", str(tmp_path)])
    assert "unknown model 'unet9000'" in line and "tiny_fcn" in line
    line = one_line_error(capsys, ["--data", "imagenet", "--out", str(tmp_path)])
    assert "unknown dataset 'imagenet'" in line and "shapes" in line


def test_bad_checkpoints(tmp_path, capsys):
    line = one_line_error(
        capsys, ["--out", str(tmp_path), "--resume", str(tmp_path / "missing.pt")]
    )
    assert "does not exist" in line
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    line = one_line_error(
        capsys, ["--out", str(tmp_path), "--resume", str(tmp_path / "bad.pt")]
    )
    assert "not a readable checkpoint" in line


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    assert main(["--out", str(tmp_path), *TINY]) == 0
    capsys.readouterr()
    line = one_line_error(
        capsys,
        [
            "--out",
            str(tmp_path),
            "--resume",
            str(tmp_path / "checkpoint.pt"),
            "--width",
            "0.5",
        ],
    )
    assert "was written for --model tiny_fcn --data shapes --width 0.25" in line
    assert "not --model tiny_fcn --data shapes --width 0.5" in line


def test_out_not_writable(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = one_line_error(capsys, ["--out", str(blocker / "run"), *TINY])
    assert "cannot write to --out" in line


def test_pretrained_needs_a_loader(tmp_path, capsys):
    line = one_line_error(
        capsys, ["--out", str(tmp_path), "--pretrained", str(tmp_path / "w.pth"), *TINY]
    )
    assert "has no pretrained weights" in line


def test_argument_errors_are_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "utils.train", "--epochs", "many", "--out", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: argument --epochs: invalid int value: 'many' (see --help)"
    ]


def test_help_explains_every_flag():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    assert "tiny_fcn" in text and "shapes" in text


def test_non_finite_loss_is_a_one_line_error(tmp_path, capsys):
    line = one_line_error(
        capsys, ["--out", str(tmp_path), "--lr", "1e30", *TINY], code=1
    )
    assert "training stopped" in line


def test_pretrained_errors_are_one_line(tmp_path, capsys):
    weights = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, weights)
    line = one_line_error(capsys, ["--model", "fcn8s", "--out", str(tmp_path / "a"),
                                   "--pretrained", str(weights), *TINY])
    assert "ImageNet weights need width=1.0" in line  # TINY is width 0.25
    full_width = TINY[: TINY.index("--width")] + ["--no-progress"]
    (tmp_path / "junk.pth").write_bytes(b"junk")
    line = one_line_error(capsys, ["--model", "fcn8s", "--width", "1", "--out",
                                   str(tmp_path / "b"), "--pretrained",
                                   str(tmp_path / "junk.pth"), *full_width])
    assert line.startswith("error: --pretrained")
    line = one_line_error(capsys, ["--model", "fcn8s", "--width", "1", "--out",
                                   str(tmp_path / "c"), "--pretrained", str(weights),
                                   *full_width])
    assert "missing" in line or "unexpected" in line
