"""Safe, bounded, all-or-nothing extraction of tar (gz, bz2, xz) and zip archives.

**What is written.** Folders and regular files, nothing else. Each is created
one path component at a time, relative to an open folder (never through a
path string that the kernel could resolve through a link), each file new
(``O_CREAT | O_EXCL | O_NOFOLLOW``) inside a folder that this extraction
created itself (checked by its inode). No symbolic or hard link is ever
created, so no member can steer a later one outside the target, and nothing
rests on ``os.path.realpath`` (no PATH_MAX trick) or on the running Python's
``tarfile`` filters.

**Refused**, naming the member (shortened to a readable length): absolute
names, ``..`` components, NUL bytes, names over 4,096 bytes or components over
255; symbolic links (the datasets ship none), devices, fifos and sparse files;
a member that appears twice or lands inside a file; encrypted zip members and
compression methods that ``zipfile`` cannot read (Deflate64, ...); tar
extended headers over 1 MiB, before ``tarfile`` reads them. A tar hard link
becomes a copy of the file it names, which must be a file extracted before it.

**Bounded.** The sizes an archive declares must fit in the free disk space
(a zip's all at once before anything is written, a tar's member by member
before each is written), and no member may yield more bytes than it declares.

**Whole.** A tar must end with its end-of-archive marker followed by nothing
but zero padding: ``tarfile`` stops silently at a damaged later header or at
the end of an archive cut at a member boundary, as if the archive ended
there. A compressed tar is read to its very end, so that gzip's CRC and
length trailer (bzip2's, xz's checks) are verified; zip members are checked
by their CRC-32.

**All or nothing.** Extraction happens in a hidden folder
``.<dest>.extracting.<random>.partial`` next to ``dest``, locked while it runs;
only a complete, checked result is renamed to ``dest``. The next extraction
to the same ``dest`` removes what a killed run left there, and says so.
"""

from __future__ import annotations

import errno
import glob
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from data_scripts.disk import (
    RESERVE,
    DiskFullError,
    disk_full,
    free_bytes,
    free_inodes,
    is_disk_full,
    lock,
    remove_leftovers,
    size_text,
)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MAX_NAME = 4096  # bytes in a member's name (PATH_MAX on Linux)
MAX_COMPONENT = 255  # bytes in one component (NAME_MAX of common file systems)
MAX_HEADER = 1 << 20  # bytes of one tar extended header (pax, GNU long name)
MAX_PADDING = 16 << 20  # zero bytes after a tar's end-of-archive marker
CHUNK = 1 << 20  # bytes copied per read

ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
               zipfile.ZIP_LZMA}  # what zipfile can decompress
ZIP_METHOD_NAMES = {1: "Shrink", 6: "Implode", 9: "Deflate64", 93: "Zstandard",
                    95: "xz", 98: "PPMd", 99: "AES encryption"}
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
             tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)

# Where the OS can create files relative to an open folder (Linux, macOS),
# every step does; elsewhere (Windows) paths are joined from checked
# components, which is safe too because no link is ever created.
BY_FD = ({os.open, os.mkdir} <= os.supports_dir_fd
         and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY"))
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_BINARY = getattr(os, "O_BINARY", 0)


class ArchiveError(RuntimeError):
    """The archive cannot be read (truncated, corrupt, unknown format)."""


class UnsafeArchiveError(ArchiveError):
    """A member would land outside the target, or is something never extracted."""


def shown(name: str, limit: int = 120) -> str:
    """``repr(name)``, shortened for a message: names can be megabytes long."""
    text = repr(name)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(name):,} characters)"


def extract(archive, dest, keep: str | None = None, check=None) -> Path:
    """Extract ``archive`` into the new folder ``dest`` and return ``dest``.

    ``keep`` (a glob such as ``"*/CamVid"``) keeps only that folder of the
    archive as ``dest``; ``check(folder)`` may inspect the result and raise
    before it is moved into place. ``dest`` must not exist yet: it is renamed
    into place in one step, so an existing ``dest`` is a finished one.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(
            f"{dest} already exists; remove it to extract {archive.name} again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(dest.parent, f".{glob.escape(dest.name)}.extracting.*.partial")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting.", suffix=".partial",
                                dir=dest.parent))
    fd = os.open(tmp, os.O_RDONLY | _DIRECTORY)
    try:
        lock(fd)  # a later run leaves this folder alone while we hold it
        try:
            tree = _Tree(fd, tmp, archive)
            (_extract_zip if _is_zip(archive) else _extract_tar)(archive, tree)
        except ArchiveError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error,
                lzma.LZMAError, OSError) as err:
            explained = _explain(err, archive, dest)
            if explained is err:
                raise
            raise explained from err
        found = tmp if keep is None else next(iter(sorted(tmp.glob(keep))), None)
        if found is None or not found.is_dir():
            raise corrupt(archive, f"it has no folder {keep}/; is it the right file?")
        if check is not None:
            check(found)
        os.replace(found, dest)
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def corrupt(archive: Path, why: str) -> ArchiveError:
    return ArchiveError(
        f"cannot extract {archive}: {why}. The archive is truncated, corrupt or "
        f"not a tar/zip file; nothing was extracted. Delete {archive} and run the "
        "command again to download it afresh."
    )


def _explain(err: BaseException, archive: Path, dest: Path) -> BaseException:
    """The error to report for ``err``: a full disk is not a corrupt archive."""
    if is_disk_full(err):
        return disk_full(err, f"extracting {archive.name} next to {dest}")
    if isinstance(err, PermissionError) or getattr(err, "errno", None) == errno.EROFS:
        return err  # cannot write there: the command line says so
    return corrupt(archive, str(err)[:300])


def _is_zip(archive: Path) -> bool:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return True
    if name.endswith(TAR_SUFFIXES):
        return False
    return zipfile.is_zipfile(archive)


def member_parts(archive: Path, name: str, folder: bool = False) -> tuple[str, ...]:
    """The components of the member name ``name``, or :class:`UnsafeArchiveError`.

    Backslashes count as separators (archives made on Windows); empty and
    ``.`` components are dropped. Only a folder may have no components left.
    """
    label = f"{archive.name}: member {shown(name)}"
    try:
        size = len(name.encode("utf-8", "surrogateescape"))
    except UnicodeError:
        raise UnsafeArchiveError(f"{label} has a name that is not text") from None
    if size > MAX_NAME:
        raise UnsafeArchiveError(f"{label} has a name of {size:,} bytes, more than "
                                 f"{MAX_NAME:,}; refusing to extract")
    if "\0" in name:
        raise UnsafeArchiveError(f"{label} has a NUL byte in its name; refusing")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise UnsafeArchiveError(
            f"{label} has an absolute path; refusing to extract an archive that "
            "writes outside its target directory"
        )
    parts = tuple(p for p in posix.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(
            f"{label} contains '..'; refusing to extract an archive that writes "
            "outside its target directory"
        )
    if not BY_FD and any(":" in p for p in parts):
        raise UnsafeArchiveError(f"{label} has a ':' in its name; refusing")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT for p in parts):
        raise UnsafeArchiveError(f"{label} has a component longer than "
                                 f"{MAX_COMPONENT} bytes; refusing")
    if not parts and not folder:
        raise UnsafeArchiveError(f"{label} is a file without a name; refusing")
    return parts


class _Tree:
    """Folders and files created under one new folder, never through a link."""

    def __init__(self, fd: int, path: Path, archive: Path):
        self.fd, self.path, self.archive = fd, path, archive
        self.dirs: set[tuple[str, ...]] = {()}  # folders made, as components
        self.files: dict[tuple[str, ...], int] = {}  # files written -> size
        st = os.fstat(fd)
        self.made = {(st.st_dev, st.st_ino)}  # inodes of the folders made
        self.free = free_bytes(path)
        self.inodes = free_inodes(path)
        self.declared = 0  # bytes the members so far declare
        self.count = 0  # members so far

    def reserve(self, nbytes: int, nfiles: int, everything: bool = False) -> None:
        """Account for members about to be written (``everything``: all of
        them at once); refuse what cannot fit."""
        self.declared += nbytes
        self.count += nfiles
        if self.declared > self.free - RESERVE:
            raise DiskFullError(
                f"{self.archive.name} declares {size_text(self.declared)} of "
                f"members{'' if everything else ' so far'}, but only "
                f"{size_text(self.free)} are free on the disk of {self.path.parent} "
                f"(keeping {size_text(RESERVE)} spare); nothing was extracted. Free "
                "some space or choose a --root on a larger disk (an archive that "
                "expands far beyond its size may also be a zip bomb)"
            )
        if self.inodes is not None and self.count > self.inodes - 1000:
            raise DiskFullError(
                f"{self.archive.name} holds {self.count:,} members, but only "
                f"{self.inodes:,} more files fit on the disk of {self.path.parent}; "
                "nothing was extracted"
            )

    # A "handle" is an open folder's fd (BY_FD) or its path (elsewhere).
    def _at(self, handle, name: str):
        """(path, dir_fd) arguments that name ``name`` inside ``handle``."""
        return (name, handle) if BY_FD else (os.path.join(handle, name), None)

    def _close(self, handle) -> None:
        if BY_FD:
            os.close(handle)

    def _enter(self, handle, parts: tuple[str, ...]):
        """Open the folder ``parts`` (its parent is ``handle``), making it if new."""
        label = f"{self.archive.name}: {shown('/'.join(parts))}"
        if parts in self.files:
            raise UnsafeArchiveError(f"{label} is a file and also a folder in the "
                                     "archive; refusing")
        path, dir_fd = self._at(handle, parts[-1])
        made = False
        if parts not in self.dirs:
            try:
                os.mkdir(path, 0o755, dir_fd=dir_fd)
                made = True
            except FileExistsError:  # e.g. "A" and "a" on a case-insensitive disk
                pass
        try:
            if BY_FD:
                child = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW,
                                dir_fd=dir_fd)
                st = os.fstat(child)
            else:
                child, st = path, os.lstat(path)
        except OSError as err:  # ELOOP (a link), ENOTDIR (a file)
            raise UnsafeArchiveError(f"{label} is not a folder this extraction "
                                     f"made ({err.strerror}); refusing") from None
        ident = (st.st_dev, st.st_ino)
        if made:
            self.made.add(ident)
        if not stat.S_ISDIR(st.st_mode) or ident not in self.made:
            self._close(child)
            raise UnsafeArchiveError(f"{label} is not a folder this extraction "
                                     "made; refusing")
        self.dirs.add(parts)
        return child

    def _folder(self, parts: tuple[str, ...]):
        """A handle on the folder ``parts``, made (with its parents) if new."""
        handle = os.dup(self.fd) if BY_FD else str(self.path)
        for i in range(len(parts)):
            try:
                child = self._enter(handle, parts[: i + 1])
            finally:
                self._close(handle)
            handle = child
        return handle

    def mkdir(self, parts: tuple[str, ...]) -> None:
        self._close(self._folder(parts))

    def write(self, parts: tuple[str, ...], src, declared: int, label: str) -> None:
        """Create the file ``parts`` from ``src``, which must hold ``declared``
        bytes: not one more is written."""
        handle = self._folder(parts[:-1])
        try:
            path, dir_fd = self._at(handle, parts[-1])
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                         | _BINARY, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            raise UnsafeArchiveError(
                f"{self.archive.name}: member {label} appears twice (or as a file "
                "and a folder); refusing to overwrite"
            ) from None
        finally:
            self._close(handle)
        self.files[parts] = declared
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > declared:
                    raise corrupt(self.archive, f"member {label} holds more than "
                                  f"the {declared:,} bytes its header declares")
                out.write(chunk)
        if written != declared:
            raise corrupt(self.archive, f"member {label} holds {written:,} bytes, "
                          f"its header declares {declared:,}")

    def copy(self, source: tuple[str, ...], parts: tuple[str, ...], label: str,
             target: str) -> None:
        """A tar hard link, extracted as a copy of a file extracted before it."""
        if source not in self.files:
            raise UnsafeArchiveError(
                f"{self.archive.name}: member {label} is a hard link to "
                f"{shown(target)}, which is not a file extracted before it; refusing"
            )
        size = self.files[source]
        self.reserve(size, 1)
        handle = self._folder(source[:-1])
        try:
            path, dir_fd = self._at(handle, source[-1])
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY, dir_fd=dir_fd)
        finally:
            self._close(handle)
        with os.fdopen(fd, "rb") as src:
            self.write(parts, src, size, label)


class _TarInfo(tarfile.TarInfo):
    """tarfile's header reader, bounded and telling why the archive ended."""

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as err:
            tf.end_reason = err  # tarfile takes any of these for the end
            raise

    def _proc_member(self, tf):
        # tarfile reads a pax or GNU long-name header whole, whatever its size
        if self.type in _EXTENDED and self.size > MAX_HEADER:
            raise UnsafeArchiveError(
                f"{os.path.basename(tf.name or 'archive')}: an extended header of "
                f"{size_text(self.size)} at byte {self.offset:,} (more than "
                f"{size_text(MAX_HEADER)}); refusing to read it"
            )
        return super()._proc_member(tf)


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {shown(member.linkname)})"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    if member.sparse is not None or member.type == tarfile.GNUTYPE_SPARSE:
        return "a sparse file"
    return f"of the unknown type {member.type!r}"


def _extract_tar(archive: Path, tree: _Tree) -> None:
    with tarfile.open(archive, "r:*", tarinfo=_TarInfo) as tf:
        while (member := tf.next()) is not None:
            tf.members.clear()  # one pass: no need to keep every header
            label = shown(member.name)
            parts = member_parts(archive, member.name, folder=member.isdir())
            if member.isdir():
                tree.mkdir(parts)
            elif member.type in _FILE_TYPES and member.sparse is None:
                tree.reserve(member.size, 1)
                with tf.extractfile(member) as src:
                    tree.write(parts, src, member.size, label)
            elif member.islnk():
                try:
                    source = member_parts(archive, member.linkname)
                except UnsafeArchiveError:
                    raise UnsafeArchiveError(
                        f"{archive.name}: member {label} is a hard link to "
                        f"{shown(member.linkname)}, outside the archive; refusing"
                    ) from None
                tree.copy(source, parts, label, member.linkname)
            else:
                raise UnsafeArchiveError(
                    f"{archive.name}: member {label} is {_kind(member)}; the "
                    "datasets these scripts prepare hold only files and folders, "
                    "so links, devices and the like are never extracted"
                )
        _check_end(archive, tf)


def _check_end(archive: Path, tf: tarfile.TarFile) -> None:
    """The archive ended with its end-of-archive marker, then only zeros."""
    reason = getattr(tf, "end_reason", None)
    if not isinstance(reason, tarfile.EOFHeaderError):
        where = f"at byte {tf.offset:,}"
        why = {tarfile.EmptyHeaderError: f"it ends {where} without the tar "
                                         "end-of-archive marker (cut short)",
               tarfile.TruncatedHeaderError: f"it ends {where} inside a header"}
        raise corrupt(archive, why.get(type(reason), f"the header {where} is "
                                                     f"damaged ({reason})"))
    # Reading on to the end also makes gzip, bzip2 and xz check their trailers.
    padding = 0
    while chunk := tf.fileobj.read(CHUNK):
        padding += len(chunk)
        if chunk.strip(b"\0") or padding > MAX_PADDING:
            raise corrupt(archive, "there is data after its end-of-archive marker "
                                   f"at byte {tf.offset:,}")


def _extract_zip(archive: Path, tree: _Tree) -> None:
    with zipfile.ZipFile(archive) as zf:
        plan = []
        for info in zf.infolist():  # every member checked before anything is written
            label = shown(info.filename)
            mode = info.external_attr >> 16
            folder = info.is_dir() or stat.S_ISDIR(mode)
            parts = member_parts(archive, info.filename, folder=folder)
            if stat.S_ISLNK(mode):  # its target is never read: it may be huge
                raise UnsafeArchiveError(
                    f"{archive.name}: member {label} is a symbolic link; the "
                    "datasets these scripts prepare hold only files and folders, "
                    "so links are never extracted"
                )
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"{archive.name}: member {label} is a "
                                         "device or fifo; refusing to extract")
            if info.flag_bits & 0x1:
                raise ArchiveError(
                    f"{archive.name}: member {label} is encrypted; the datasets "
                    "are not, so this is not the expected archive. Nothing was "
                    "extracted."
                )
            if not folder and info.compress_type not in ZIP_METHODS:
                method = ZIP_METHOD_NAMES.get(info.compress_type, "unknown")
                raise ArchiveError(
                    f"{archive.name}: member {label} uses compression method "
                    f"{info.compress_type} ({method}), which Python's zipfile "
                    "cannot read. Nothing was extracted: unpack it with another "
                    "tool (7z x) and zip it again with plain deflate (zip -r)."
                )
            plan.append((info, parts, folder, label))
        tree.reserve(sum(i.file_size for i, _, folder, _ in plan if not folder),
                     len(plan), everything=True)
        for info, parts, folder, label in plan:
            if folder:
                tree.mkdir(parts)
            else:
                with zf.open(info) as src:  # checks the CRC-32 at the end
                    tree.write(parts, src, info.file_size, label)
