"""The disk side of the data scripts: free space, a full disk, leftovers.

Downloads and extractions check the space they need against the free space
before they write (:func:`require_space`), report a full disk as a full disk
(:class:`DiskFullError`, never as a corrupt download), and the next run
removes what a killed run left behind (:func:`remove_leftovers`), saying so
in one line.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

try:  # POSIX; elsewhere leftovers are removed without asking who holds them
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# Space every step leaves free, so that the system and the next step can still
# write (and a small mistake in a declared size does not fill the disk).
RESERVE = 64 << 20

# errno values that mean "no room": a full disk, a quota, RLIMIT_FSIZE.
DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(RuntimeError):
    """There is not (or no longer) enough room for what a step writes."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL


def free_bytes(path) -> int:
    """Bytes the current user may still write on the file system of ``path``."""
    return shutil.disk_usage(path).free


def free_inodes(path) -> int | None:
    """Files that may still be created there; None where nobody counts them."""
    if not hasattr(os, "statvfs"):  # pragma: no cover - Windows
        return None
    st = os.statvfs(path)
    return st.f_favail if st.f_files else None  # btrfs and others report 0


def size_text(n: int) -> str:
    """``1536`` -> ``'1.5 KB'``: sizes in messages, in decimal units."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def require_space(need: int, where, what: str) -> None:
    """Raise :class:`DiskFullError` unless ``need`` bytes fit on ``where``'s disk
    with :data:`RESERVE` to spare. ``what`` completes "… needs N": the step."""
    free = free_bytes(where)
    if need > free - RESERVE:
        raise DiskFullError(
            f"{what} needs {size_text(need)}, but only {size_text(free)} are free "
            f"on the disk of {where} (keeping {size_text(RESERVE)} spare); free "
            "some space or choose a --root on a larger disk, then run the same "
            "command again",
        )


def disk_full(err: OSError, what: str) -> DiskFullError:
    """The one-line error for a write that failed with a full disk."""
    return DiskFullError(
        f"disk full while {what} ({err.strerror or err}); free some space or "
        "choose a --root on a larger disk, then run the same command again "
        "(finished steps are kept)",
    )


def _locked_by_a_live_run(path: Path) -> bool:
    """A running extraction holds an exclusive ``flock`` on its folder."""
    if fcntl is None or path.is_symlink() or not path.is_dir():
        return False
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock
    return False


def lock(fd: int) -> None:
    """Mark the folder open as ``fd`` as in use until ``fd`` is closed."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))


def remove_leftovers(folder, pattern: str) -> list[str]:
    """Remove the entries of ``folder`` that match ``pattern`` (a glob), what an
    earlier run that was killed left, and print one line saying so.

    A folder that a live run holds (see :func:`lock`) is left alone. Links are
    removed as links, never followed. Returns the names removed.
    """
    removed, size = [], 0
    for path in sorted(Path(folder).glob(pattern)):
        if _locked_by_a_live_run(path):
            continue
        try:
            size += _size(path)
        except OSError:  # vanished or unreadable: remove it all the same
            pass
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path.name)
    if removed:
        names = ", ".join(removed[:3]) + (
            f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        print(f"removed what an interrupted earlier run left in {folder}: {names} "
              f"({size_text(size)})")
    return removed
