"""data_scripts.extract against archives built to escape, exhaust or deceive.

Every test builds its archive itself (tests/hostile_inputs.py) and checks the
same three things: the archive is refused with a one-line error naming the
problem; nothing outside the target changed (a sentinel file next to it keeps
its bytes, and no new entry appears anywhere around it); and nothing
half-written is left.
"""

import bz2
import gzip
import io
import lzma
import os
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hostile_inputs as h

from data_scripts import disk, extract
from data_scripts.disk import DiskFullError
from data_scripts.extract import ArchiveError, UnsafeArchiveError

ROOT = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict:
    """Every entry under ``folder`` (links not followed): kind and content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


class Sandbox:
    """``tmp/archives/<archive>``, the target ``tmp/work/out``, and a sentinel
    ``tmp/work/flag`` and ``tmp/outside.txt`` that must survive untouched."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        (tmp / "archives").mkdir()
        (tmp / "work").mkdir()
        (tmp / "work" / "flag").write_bytes(b"original flag")
        (tmp / "outside.txt").write_bytes(b"original outside")
        self.dest = tmp / "work" / "out"

    def archive(self, name: str, data: bytes) -> Path:
        path = self.tmp / "archives" / name
        path.write_bytes(data)
        self.before = tree(self.tmp)
        return path

    def refused(self, name, data, error=ArchiveError, match=None, **kw):
        """Extract; expect ``error``; check the message and that nothing changed."""
        archive = self.archive(name, data)
        with pytest.raises(error) as info:
            extract.extract(archive, self.dest, **kw)
        message = str(info.value)
        assert "\n" not in message and len(message) < 700, message[:2000]
        if match:
            assert match in message, message
        assert tree(self.tmp) == self.before  # nothing outside, nothing left
        return message


@pytest.fixture
def box(tmp_path):
    return Sandbox(tmp_path)


# ------------------------------------------------ writing outside the target


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_a_chain_of_symlinks_is_refused(box, fmt):
    # a/up -> .., a/up/S -> .., a/up/S/x: x would land two levels up
    box.refused(f"chain.{fmt}", h.symlink_chain(fmt.split(".")[0]),
                UnsafeArchiveError, "'a/up' is a symbolic link")
    assert not (box.tmp / "x").exists() and not (box.tmp / "work" / "x").exists()


def test_the_realpath_overflow_tar_of_cve_2025_4517_is_refused(box):
    # Nested long names and symlinks past PATH_MAX, then a hard link through
    # them to work/flag and a member that overwrites it. The project's own
    # checks refuse it (its first symlink), whatever tarfile's filters do.
    data = h.realpath_overflow_tar(box.dest)
    box.refused("cve.tar", data, UnsafeArchiveError, "is a symbolic link")
    assert (box.tmp / "work" / "flag").read_bytes() == b"original flag"


def test_no_link_is_ever_created_even_without_dir_fds(box, monkeypatch):
    # The fallback for systems without dir_fd (Windows) joins checked components.
    monkeypatch.setattr(extract, "BY_FD", False)
    box.refused("chain.zip", h.symlink_chain("zip"), UnsafeArchiveError, "symbolic")
    good = box.archive("good.tar", h.tar_bytes([("a/b/c.txt", b"c"), ("a/d", None),
                                                ("a/e", ("hard", "a/b/c.txt"))]))
    out = extract.extract(good, box.dest)
    assert tree(out) == {"a": ("dir", None), "a/b": ("dir", None),
                         "a/b/c.txt": ("file", b"c"), "a/d": ("dir", None),
                         "a/e": ("file", b"c")}


@pytest.mark.parametrize("name, match", [
    ("x" * 5000, "more than 4,096"),
    ("a/" + "y" * 300, "longer than 255"),
    ("top/..\\..\\evil.txt", "contains '..'"),
    ("C:/evil.txt", "absolute path"),
    (".", "without a name"),
])
def test_bad_member_names_are_refused(box, name, match):
    data = h.zip_bytes([("top/ok.txt", b"ok"), (name, b"x")])
    message = box.refused("names.zip", data, UnsafeArchiveError, match)
    assert len(message) < 400  # a 5,000-character name is shortened


def test_a_nul_byte_is_refused_though_tarfile_and_zipfile_cut_names_there():
    with pytest.raises(UnsafeArchiveError, match="NUL byte"):
        extract.member_parts(Path("a.tar"), "top/a\0/../../b")


def test_members_that_collide_are_refused(box):
    twice = h.tar_bytes([("top/a.txt", b"first"), ("top/a.txt", b"second")])
    box.refused("twice.tar", twice, UnsafeArchiveError, "appears twice")
    inside = h.zip_bytes([("top/a", b"a file"), ("top/a/b.txt", b"inside it")])
    box.refused("inside.zip", inside, UnsafeArchiveError, "is a file and also")
    folder = h.tar_bytes([("top/a", None), ("top/a", b"a file on a folder")])
    box.refused("folder.tar", folder, UnsafeArchiveError, "appears twice")


@pytest.mark.parametrize("kind, match", [
    (tarfile.FIFOTYPE, "a fifo"), (tarfile.CHRTYPE, "a device"),
    (tarfile.GNUTYPE_SPARSE, "a sparse file"), (b"Z", "unknown type"),
])
def test_special_tar_members_are_refused(box, kind, match):
    info = tarfile.TarInfo("top/special")
    info.type = kind
    data = h.tar_bytes([("top/ok.txt", b"ok"), (info, None)])
    box.refused("special.tar", data, UnsafeArchiveError, match)


def test_a_hard_link_becomes_a_copy_and_may_only_name_an_earlier_file(box):
    later = h.tar_bytes([("top/l", ("hard", "top/f")), ("top/f", b"data")])
    box.refused("later.tar", later, UnsafeArchiveError, "not a file extracted before")
    folder = h.tar_bytes([("top/d", None), ("top/l", ("hard", "top/d"))])
    box.refused("folder.tar", folder, UnsafeArchiveError, "not a file extracted")
    # the hard link of the CVE construction, through a name with '..'
    out = h.tar_bytes([("top/l", ("hard", "../work/flag"))])
    box.refused("out.tar", out, UnsafeArchiveError, "outside the archive")


def test_a_planted_leftover_link_is_removed_without_following_it(box, capsys):
    # a "leftover" that is a link to a folder outside: removed as a link
    outside = box.tmp / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"keep")
    (box.tmp / "work" / ".out.extracting.abc.partial").symlink_to(outside)
    good = box.archive("good.zip", h.zip_bytes([("top/a.txt", b"a")]))
    extract.extract(good, box.dest)
    assert (outside / "keep.txt").read_bytes() == b"keep"
    assert "removed what an interrupted earlier run left" in capsys.readouterr().out
    assert sorted(p.name for p in (box.tmp / "work").iterdir()) == ["flag", "out"]


def test_a_dangling_symlink_at_the_destination_is_refused(box):
    box.dest.symlink_to(box.tmp / "elsewhere")
    good = box.archive("good.zip", h.zip_bytes([("top/a.txt", b"a")]))
    with pytest.raises(FileExistsError, match="already exists"):
        extract.extract(good, box.dest)
    assert not (box.tmp / "elsewhere").exists()


# --------------------------------------------------- exhausting memory/disk


def test_a_huge_symlink_target_is_never_read(box):
    # 32 MB of link "target" in a 32 KB zip (the probe used 512 MB)
    data = h.huge_symlink_zip(32 << 20)
    assert len(data) < 64 << 10
    tracemalloc.start()
    try:
        message = box.refused("huge.zip", data, UnsafeArchiveError, "symbolic link")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # the target is not read, nor quoted
    assert len(message) < 300


@pytest.mark.parametrize("kind", [b"K", b"x"])  # GNU long link, pax header
def test_a_huge_tar_extended_header_is_refused_before_it_is_read(box, kind):
    data = h.extended_header_tar(kind, 2 << 20)
    tracemalloc.start()
    try:
        message = box.refused("header.tar.gz", data, UnsafeArchiveError,
                              "an extended header of 2.1 MB")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    assert len(message) < 300


@pytest.fixture(scope="module")
def bomb():
    return h.zip_bomb(1 << 30)  # 1 GiB of zeros in about 1 MB


def test_a_zip_bomb_is_refused_from_its_declared_sizes(box, bomb, monkeypatch):
    assert len(bomb) < 1_100_000
    monkeypatch.setattr(extract, "free_bytes", lambda path: 512 << 20)

    def no_writing(*args):
        raise AssertionError("a member was written")

    monkeypatch.setattr(extract._Tree, "write", no_writing)
    message = box.refused("bomb.zip", bomb, DiskFullError, "declares 1.1 GB")
    assert "only 536.9 MB are free" in message


def test_a_tar_declaring_a_petabyte_is_refused_before_reading_it(box, monkeypatch):
    # the real free space: no disk holds 1 PB
    monkeypatch.setattr(extract._Tree, "write", None)  # never reached
    box.refused("huge.tar.gz", h.declared_size_tar(10**15), DiskFullError,
                "declares 1000.0 TB")


def test_too_many_members_for_the_free_inodes_are_refused(box, monkeypatch):
    monkeypatch.setattr(extract, "free_inodes", lambda path: 1200)
    data = h.zip_bytes([(f"top/{i}", b"") for i in range(300)])
    box.refused("many.zip", data, DiskFullError, "more files fit")


def test_no_member_writes_more_than_it_declares(box, monkeypatch):
    # A reader that ignores the declared size (zipfile itself stops there,
    # another decompressor might not): the copy stops at the declared size.
    data = h.zip_bytes([("top/a.txt", b"12345")])
    real_open = extract.zipfile.ZipFile.open

    def lying_open(self, info, *args, **kw):
        real_open(self, info, *args, **kw).close()
        return io.BytesIO(b"x" * (10 << 20))

    monkeypatch.setattr(extract.zipfile.ZipFile, "open", lying_open)
    box.refused("lie.zip", data, ArchiveError,
                "holds more than the 5 bytes its header declares")


def test_a_zip_whose_declared_size_is_forged_small_fails_its_crc(box):
    entry = h.file_entry("top/a.bin", b"z" * 100_000)
    entry["size"] = 1000  # the rest would be a free extra 99 KB
    box.refused("forged.zip", h.raw_zip([entry]), ArchiveError, "Bad CRC-32")


# ------------------------------------------------- corrupt or unreadable


def three_members() -> bytes:
    return h.tar_bytes([(f"top/f{i}.bin", bytes([i]) * 3000) for i in range(3)])


def bad_checksum_later() -> bytes:
    data = bytearray(three_members())
    data[h.tar_header_offsets(bytes(data))[2] + 5] ^= 0x01  # in the 3rd name
    return bytes(data)


def cut_at_boundary() -> bytes:
    data = three_members()
    return data[: h.tar_header_offsets(data)[2]]


def garbage_after_end() -> bytes:
    return three_members() + b"trailing garbage".ljust(512, b"\0")


def gz_without_trailer() -> bytes:
    return gzip.compress(three_members())[:-8]


def gz_with_a_bad_crc() -> bytes:
    data = bytearray(gzip.compress(three_members()))
    data[-8] ^= 0xFF
    return bytes(data)


CORRUPT = {
    "bad checksum in a later header": ("a.tar", bad_checksum_later, "damaged"),
    "cut at a member boundary": ("b.tar", cut_at_boundary, "without the tar"),
    "cut inside a header": ("c.tar", lambda: cut_at_boundary() + b"\0" * 100,
                            "inside a header"),
    "garbage after the end": ("d.tar", garbage_after_end, "data after"),
    "gzip without its trailer": ("e.tar.gz", gz_without_trailer, "end-of-stream"),
    "gzip with a bad CRC": ("f.tar.gz", gz_with_a_bad_crc, "CRC check failed"),
    "bzip2 cut short": ("g.tar.bz2", lambda: bz2.compress(three_members())[:-10],
                        "end-of-stream"),
    "xz cut short": ("h.tar.xz", lambda: lzma.compress(three_members())[:-10],
                     "end-of-stream"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_corrupt_tar_never_counts_as_success(box, case):
    name, build, match = CORRUPT[case]
    message = box.refused(name, build(), ArchiveError, match)
    assert "nothing was extracted" in message and "Delete" in message


@pytest.mark.parametrize("patch, match", [
    ({"flags": 0x1}, "is encrypted"),
    ({"method": 9}, "method 9 (Deflate64)"),
    ({"method": 93}, "method 93 (Zstandard)"),
])
def test_unreadable_zip_members_give_one_clear_line(box, patch, match):
    entries = [h.file_entry("top/ok.txt", b"ok"),
               {**h.file_entry("top/x.bin", b"secret" * 100), **patch}]
    box.refused("x.zip", h.raw_zip(entries), ArchiveError, match)


def test_a_full_disk_is_reported_as_a_full_disk(box, monkeypatch):
    data = h.zip_bytes([("top/a.bin", b"a" * 3_000_000)])
    real_fdopen = os.fdopen

    class FullDisk(io.RawIOBase):  # what a full disk does to write()
        def __init__(self, fd):
            self.f = real_fdopen(fd, "wb")

        def write(self, chunk):
            raise OSError(28, "No space left on device")

        def close(self):
            self.f.close()
            super().close()

    monkeypatch.setattr(extract.os, "fdopen",
                        lambda fd, mode: FullDisk(fd) if "w" in mode
                        else real_fdopen(fd, mode))
    message = box.refused("a.zip", data, DiskFullError, "disk full while extracting")
    assert "corrupt" not in message


# ------------------------------------------------------ killed, then re-run


def test_a_killed_extraction_is_cleaned_up_by_the_next_run(box, capsys):
    members = [(f"top/d{i // 100}/f{i}.bin", os.urandom(64)) for i in range(4000)]
    archive = box.archive("big.zip", h.zip_bytes(members))
    code = ("import sys; from data_scripts.extract import extract; "
            "extract(sys.argv[1], sys.argv[2])")

    def partial_folder():
        found = list((box.tmp / "work").glob(".out.extracting.*.partial/top/d1"))
        return found[0].parents[1] if found else None

    partial = h.kill_mid_way([sys.executable, "-c", code, str(archive),
                              str(box.dest)], partial_folder, ROOT)
    assert partial.is_dir()
    assert not box.dest.exists()
    out = extract.extract(archive, box.dest)  # the next run
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and said[0].startswith(
        "removed what an interrupted earlier run left") and partial.name in said[0]
    assert len(list(out.rglob("*.bin"))) == 4000
    assert sorted(p.name for p in (box.tmp / "work").iterdir()) == ["flag", "out"]


def test_a_live_extraction_is_not_taken_for_a_leftover(box, capsys):
    partial = box.tmp / "work" / ".out.extracting.live.partial"
    partial.mkdir()
    fd = os.open(partial, os.O_RDONLY)
    try:
        disk.lock(fd)  # as a running extraction holds it
        good = box.archive("good.zip", h.zip_bytes([("top/a.txt", b"a")]))
        extract.extract(good, box.dest)
        assert partial.is_dir() and "removed" not in capsys.readouterr().out
    finally:
        os.close(fd)
