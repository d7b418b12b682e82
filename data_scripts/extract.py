"""Safe, all-or-nothing extraction of tar (gz, bz2, xz) and zip archives.

:func:`extract` refuses members with absolute paths, ``..`` components,
links (symbolic or hard) that would point outside the target, and device
files, naming the offending member. It extracts into a temporary directory
next to ``dest`` and renames that into place, so ``dest`` either does not exist
or holds the whole archive: a failure (an unsafe member, a truncated or
corrupt archive, a full disk) leaves nothing behind.
"""

from __future__ import annotations

import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class ArchiveError(RuntimeError):
    """The archive cannot be read (truncated, corrupt, unknown format)."""


class UnsafeArchiveError(ArchiveError):
    """A member would land outside the target directory."""


def extract(archive, dest) -> Path:
    """Extract ``archive`` into the new directory ``dest`` and return ``dest``.

    ``dest`` must not exist yet: a complete extraction is renamed into place in
    one step, so an existing ``dest`` is a finished one (callers skip it).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    if dest.exists():
        raise FileExistsError(
            f"{dest} already exists; remove it to extract {archive.name} again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial",
                                dir=dest.parent))
    try:
        if _is_zip(archive):
            _extract_zip(archive, tmp)
        else:
            _extract_tar(archive, tmp)
        os.replace(tmp, dest)
    except UnsafeArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error,
            lzma.LZMAError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(
            f"cannot extract {archive}: {err}. The archive is truncated, corrupt "
            f"or not a tar/zip file; nothing was extracted. Delete {archive} and "
            "run the command again to download it afresh."
        ) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _is_zip(archive: Path) -> bool:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return True
    if name.endswith(TAR_SUFFIXES):
        return False
    return zipfile.is_zipfile(archive)


def check_member_name(archive: Path, name: str) -> str:
    """``name`` as a clean relative POSIX path, or :class:`UnsafeArchiveError`."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise UnsafeArchiveError(
            f"{archive.name}: member {name!r} has an absolute path; refusing to "
            "extract an archive that writes outside its target directory"
        )
    if ".." in posix.split("/"):
        raise UnsafeArchiveError(
            f"{archive.name}: member {name!r} contains '..'; refusing to extract "
            "an archive that writes outside its target directory"
        )
    return posixpath.normpath(posix)


def _check_link(archive: Path, name: str, target: str, hard: bool) -> None:
    """Refuse a link whose target, resolved inside the archive, leaves it.

    A symbolic link's target is relative to the link's directory; a hard
    link's to the archive's root.
    """
    kind = "hard link" if hard else "symlink"
    target = target.replace("\\", "/")
    base = "" if hard else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive.name}: member {name!r} is a {kind} to {target!r}, which "
            "points outside the target directory; refusing to extract"
        )


def _extract_tar(archive: Path, tmp: Path) -> None:
    # Python's "data" filter (3.11.4+) repeats these checks and also drops
    # set-uid bits; our own checks come first so the error names the member.
    use_filter = hasattr(tarfile, "data_filter")
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:  # one streaming pass, even for .tar.gz
            name = check_member_name(archive, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, name, member.linkname, member.islnk())
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{archive.name}: member {member.name!r} is a device or fifo; "
                    "refusing to extract"
                )
            if use_filter:
                tf.extract(member, tmp, filter="data")
            else:
                tf.extract(member, tmp)


def _extract_zip(archive: Path, tmp: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = check_member_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8")
                _check_link(archive, name, target, hard=False)
                path = tmp / name
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, path)
                continue
            # ZipFile checks each member's CRC-32 while reading it.
            zf.extract(info, tmp)
