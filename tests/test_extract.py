"""data_scripts.extract: safe, all-or-nothing extraction."""

import io
import os
import stat
import tarfile
import zipfile

import pytest

from data_scripts.extract import ArchiveError, UnsafeArchiveError, extract


def make_tar(path, members, mode="w:gz"):
    """members: (name, bytes) files, or (name, ("sym"|"hard", target)) links."""
    with tarfile.open(path, mode) as tf:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                kind, target = content
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = target
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return path


def make_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members:
            if isinstance(content, tuple):  # a symlink, as Info-ZIP stores it
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, content[1])
            else:
                zf.writestr(name, content)
    return path


GOOD = [("top/a.txt", b"alpha"), ("top/sub/b.txt", b"beta" * 1000),
        ("top/hard", ("hard", "top/a.txt"))]


def files_under(folder):
    """{relative path: bytes} of every file, and the folders, under ``folder``."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"),
                                         (".tar.xz", "w:xz"), (".tar", "w")])
def test_tar_formats(tmp_path, suffix, mode):
    archive = make_tar(tmp_path / f"a{suffix}", GOOD, mode)
    out = extract(archive, tmp_path / "out")
    assert files_under(out) == {
        "top": None, "top/a.txt": b"alpha", "top/sub": None,
        "top/sub/b.txt": b"beta" * 1000, "top/hard": b"alpha"}
    # the hard link became a copy: no link is ever created
    assert os.stat(out / "top/hard").st_nlink == 1
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"a{suffix}", "out"]


def test_zip(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("top/a.txt", b"alpha"),
                                            ("top/empty/", b""),
                                            ("top/sub/b.txt", b"beta")])
    out = extract(archive, tmp_path / "out")
    assert files_under(out) == {"top": None, "top/a.txt": b"alpha",
                                "top/empty": None, "top/sub": None,
                                "top/sub/b.txt": b"beta"}


def test_keep_moves_one_folder_and_drops_the_rest(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("repo-main/Models/x", b"x"),
                                            ("repo-main/CamVid/t.png", b"t")])
    out = extract(archive, tmp_path / "CamVid", keep="*/CamVid")
    assert files_under(out) == {"t.png": b"t"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CamVid", "a.zip"]
    with pytest.raises(ArchiveError, match="no folder Nope/"):
        extract(archive, tmp_path / "other", keep="Nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CamVid", "a.zip"]


def test_existing_destination_is_refused(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", GOOD)
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        extract(archive, tmp_path / "out")


BAD = {
    "dotdot": ("top/../../evil.txt", b"x"),
    "absolute": ("/tmp/evil.txt", b"x"),
    "symlink_out": ("top/link", ("sym", "../../etc/passwd")),
    "symlink_abs": ("top/link", ("sym", "/etc/passwd")),
    "symlink_inside": ("top/link", ("sym", "ok.txt")),  # no link is extracted
    "hardlink_out": ("top/hard", ("hard", "../outside.txt")),
    "hardlink_to_nothing": ("top/hard", ("hard", "top/missing.txt")),
}


# zip has no hard links, so those cases exist for tar only.
UNSAFE_CASES = [(fmt, case) for fmt in ("tar", "zip") for case in sorted(BAD)
                if not (fmt == "zip" and case.startswith("hardlink"))]


@pytest.mark.parametrize("fmt, case", UNSAFE_CASES)
def test_unsafe_members_are_refused_and_nothing_is_left(tmp_path, case, fmt):
    name, content = BAD[case]
    # a good member first, so a half-done extraction would leave something
    members = [("top/ok.txt", b"fine"), (name, content)]
    if fmt == "tar":
        archive = make_tar(tmp_path / "bad.tar.gz", members)
    else:
        archive = make_zip(tmp_path / "bad.zip", members)
    with pytest.raises(UnsafeArchiveError) as err:
        extract(archive, tmp_path / "out")
    assert repr(name) in str(err.value)  # names the member
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_truncated_archive_fails_clearly_and_leaves_nothing(tmp_path, fmt):
    members = [(f"top/f{i}.bin", os.urandom(20000)) for i in range(5)]
    good = tmp_path / f"good.{fmt}"
    (make_tar if fmt == "tar.gz" else make_zip)(good, members)
    archive = tmp_path / f"cut.{fmt}"
    archive.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="truncated, corrupt") as err:
        extract(archive, tmp_path / "out")
    assert "Delete" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name, good.name]


def test_corrupt_zip_member_fails_crc(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("top/a.txt", b"alpha" * 100)])
    zipfile.ZipFile(archive).close()
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        offset = zf.infolist()[0].header_offset + 30 + len("top/a.txt")
    data[offset + 3] ^= 0xFF  # flip bits inside the deflated data
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError):
        extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]
