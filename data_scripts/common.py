"""What every data script shares: its command line, downloads, markers, report.

A script prepares one dataset under ``--root DIR``: archives go to
``DIR/downloads/``, each finished step leaves its output renamed into place
(so it is whole or absent), and the last step writes ``DIR/prepared.json``
with the split sizes and class counts, and ``DIR/prepared.sha256`` with the
SHA-256 of every file of the prepared dataset (the format of ``sha256sum``:
``cd DIR && sha256sum -c prepared.sha256`` checks it too).

A second run checks every file against ``prepared.sha256`` and then only
prints the summary. A file that changed or vanished since is downloaded
again where it was a single download (a ``--subset`` image, a weight file);
otherwise the run stops with one line that names it and the folder to delete.

Every failure the scripts foresee ends the command with one ``error:`` line
and exit status 1, never a traceback (:func:`run`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from data_scripts import sources
from data_scripts.disk import (
    DiskFullError,
    disk_full,
    is_disk_full,
    remove_leftovers,
    size_text,
)
from data_scripts.download import DownloadError, apply_mirror, download, file_digest
from data_scripts.extract import ArchiveError, extract

MANIFEST = "prepared.json"
CHECKSUMS = "prepared.sha256"


class DamagedError(RuntimeError):
    """Prepared files changed since they were prepared, and cannot be refetched."""


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m data_scripts.{prog}", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--root", type=Path, required=True,
                   help="directory to prepare the dataset in (created if missing)")
    p.add_argument("--mirror", metavar="URL",
                   help="download from this host instead: replaces scheme and host "
                        "of every URL, keeping the path (e.g. https://mirror/pub)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def output(args, path: Path, refetch: bool = False) -> Path:
    """Declare ``path`` (a file or folder under ``--root``) part of the prepared
    dataset: :func:`finish` records the SHA-256 of every file in it.
    ``refetch``: a file of it that is damaged later is downloaded again."""
    vars(args).setdefault("outputs", {})[Path(path)] = refetch
    return Path(path)


def fetch(key: str, args, folder: Path | None = None) -> Path:
    """Download ``sources.SOURCES[key]`` into ``folder`` (default
    ``ROOT/downloads``), verified by its checksum. A file downloaded into
    ``folder`` is part of the dataset (see :func:`output`)."""
    source = sources.SOURCES[key]
    url = apply_mirror(source.url, args.mirror)
    dest = (folder or args.root / "downloads") / source.filename
    if folder is not None:
        output(args, dest, refetch=True)
    if not dest.exists():
        print(f"download {url} ({source.size})")
    return download(url, dest, checksum=source.checksum,
                    progress=not args.no_progress)


def extract_part(args, archive, inner: str, dest: Path, check=None) -> Path:
    """Extract the folder ``inner`` (a glob) of ``archive`` to ``dest``, once.

    ``archive`` is a key of :data:`sources.SOURCES` (downloaded only when
    ``dest`` does not exist yet) or the path of an archive. ``check(folder)``,
    if given, inspects the extracted folder and raises when its content is
    wrong, before anything is moved into place.
    """
    output(args, dest)
    if dest.exists():
        return dest
    if isinstance(archive, str):
        archive = fetch(archive, args)
    print(f"extract {archive.name}")
    return extract(archive, dest, keep=inner, check=check)


def make_root(args) -> Path:
    """Create ``--root`` and check that it can be written to."""
    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    remove_leftovers(root, ".write-test.*")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=root)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(root)) from None
    os.close(fd)
    os.unlink(probe)
    return root


def write_json(path: Path, obj) -> None:
    """Write JSON to a temporary file and rename it, so it is whole or absent."""
    _write_text(path, json.dumps(obj, indent=1))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_manifest(root: Path) -> dict | None:
    """``ROOT/prepared.json``, or None when absent or damaged (with a note)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        manifest = str(err)
    if not isinstance(manifest, dict) or not isinstance(
            manifest.get("options", {}), dict):
        print(f"{path} is damaged ({str(manifest)[:100]}): preparing again")
        return None
    return manifest


def class_counts(label_paths, lut: np.ndarray, num_classes: int) -> list[int]:
    """How many label maps contain each class (after ``lut``)."""
    from utils.data.formats import read_label_png

    counts = np.zeros(num_classes, np.int64)
    for path in label_paths:
        present = np.unique(lut[read_label_png(path)])
        counts[present[present < num_classes]] += 1
    return counts.tolist()


def report(manifest: dict) -> None:
    """Print split sizes and class counts."""
    print(f"{manifest['dataset']} in {manifest['root']}")
    for split, n in manifest.get("splits", {}).items():
        print(f"  {split:>10}: {n} images")
    counts = manifest.get("class_counts")
    if counts:
        title = manifest.get("class_counts_of", "images containing each class")
        print(f"  {title}:")
        for name, n in counts.items():
            print(f"    {name:>20}: {n}")


# --------------------------------------------------------------- checksums


def _files(root: Path, paths) -> list[Path]:
    """Every regular file under ``paths`` (files or folders), sorted."""
    found = []
    for path in paths:
        if path.is_file():
            found.append(path)
        for folder, _, names in os.walk(path):
            found.extend(Path(folder) / n for n in names
                         if (Path(folder) / n).is_file())
    return sorted(found)


def _hash_all(paths, progress: bool, what: str) -> dict[Path, str]:
    total = sum(p.stat().st_size for p in paths)
    print(f"{what} {len(paths):,} files ({size_text(total)})")
    sums = {}
    with tqdm(total=total, unit="B", unit_scale=True, disable=not progress) as bar:
        for path in paths:
            sums[path] = file_digest(path)
            bar.update(path.stat().st_size)
    return sums


def _sha256sum_line(digest: str, rel: str) -> str:
    """One line of ``sha256sum``'s format (names with ``\\`` or a newline
    escaped as GNU coreutils does)."""
    if "\\" in rel or "\n" in rel:
        return "\\" + digest + "  " + rel.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{digest}  {rel}"


def _parse_sha256sum(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        escaped = line.startswith("\\")
        digest, sep, rel = line[escaped:].partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"not a sha256sum line: {line[:80]!r}")
        if escaped:
            rel = rel.replace("\\\\", "\0").replace("\\n", "\n").replace("\0", "\\")
        path = PurePosixPath(rel)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"not a path inside the root: {rel[:80]!r}")
        sums[rel] = digest
    return sums


def finish(args, manifest: dict) -> dict:
    """Record the SHA-256 of every declared output, then write the manifest."""
    root = args.root
    outputs = vars(args).get("outputs", {})
    paths = _files(root, outputs)
    sums = _hash_all(paths, not args.no_progress, "recording the SHA-256 of")
    lines = [_sha256sum_line(d, p.relative_to(root).as_posix())
             for p, d in sums.items()]
    _write_text(root / CHECKSUMS, "".join(line + "\n" for line in lines))
    refetch = sorted(p.relative_to(root).as_posix() for p, r in outputs.items() if r)
    manifest = {"root": str(root), **manifest, "checksums": {
        "file": CHECKSUMS, "sha256": file_digest(root / CHECKSUMS),
        "files": len(sums), "refetch": refetch}}
    write_json(root / MANIFEST, manifest)
    report(manifest)
    return manifest


def _damaged(args, manifest: dict) -> list[tuple[str, str]] | None:
    """The prepared files that changed since, as (path, why); None when the
    manifest records no usable checksums."""
    root, record = args.root, manifest.get("checksums")
    if not isinstance(record, dict) or record.get("file") != CHECKSUMS:
        return None
    path = root / CHECKSUMS
    try:
        if file_digest(path) != record.get("sha256"):
            return None
        sums = _parse_sha256sum(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    present = [root / rel for rel in sums if (root / rel).is_file()]
    actual = _hash_all(present, not args.no_progress, "checking the SHA-256 of")
    damaged = []
    for rel, digest in sums.items():
        got = actual.get(root / rel)
        if got is None:
            damaged.append((rel, "missing"))
        elif got != digest:
            damaged.append((rel, f"SHA-256 {got[:12]}..., recorded {digest[:12]}..."))
    return damaged


def already_prepared(args, **options) -> bool:
    """True (and the summary printed) when a run with these options finished
    and every file it prepared is unchanged.

    Damaged single downloads are deleted (the run then downloads them
    again); other damage raises :class:`DamagedError` naming what to delete.
    """
    root = args.root
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--root {root} is a file, not a folder")
    manifest = read_manifest(root)
    if manifest is None or manifest.get("options", {}) != options:
        return False
    damaged = _damaged(args, manifest)
    if damaged is None:
        print(f"{root / CHECKSUMS} is missing or damaged: preparing again (finished "
              "steps are kept) to record the checksums afresh")
        return False
    if damaged:
        refetch = manifest["checksums"].get("refetch", [])

        def refetchable(rel):
            return any(rel == r or rel.startswith(r + "/") for r in refetch)

        rel, why = damaged[0]
        changed = (f"{len(damaged):,} prepared file{'s' * (len(damaged) > 1)} "
                   f"changed since {MANIFEST} was written, e.g. {rel} ({why})")
        stuck = sorted({r.split("/")[0] for r, _ in damaged if not refetchable(r)})
        if stuck:
            folders = " and ".join(str(root / s) for s in stuck)
            raise DamagedError(f"{changed}. Delete {folders} and run the command "
                               "again to prepare it afresh.")
        for r, _ in damaged:
            (root / r).unlink(missing_ok=True)
        print(f"{changed}: downloading again what changed")
        return False
    print(f"{root / MANIFEST} exists and every file is unchanged: nothing to do")
    report(manifest)
    return True


# ------------------------------------------------------------ command line


def _describe(err: OSError) -> str:
    """One line for an operating-system error, with the file it concerns."""
    if is_disk_full(err):
        return str(disk_full(err, f"writing {err.filename or 'a file'}"))
    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write{where}: {err.strerror}; choose a --root you can "
                "write to")
    return f"{err.strerror or err}{':' if where else ''}{where}"


def run(main, argv=None) -> int:
    """Run ``main(argv)``; turn every foreseen failure into one ``error:`` line
    on stderr and exit status 1 (130 when interrupted)."""
    try:
        main(argv)
    except KeyboardInterrupt:
        message, code = ("interrupted; run the same command again to go on where "
                         "it stopped"), 130
    except (DownloadError, ArchiveError, DiskFullError, DamagedError, ValueError,
            TypeError) as err:
        message, code = str(err), 1
    except OSError as err:  # our own messages have no errno
        message, code = (_describe(err) if err.errno else str(err)), 1
    else:
        return 0
    message = " ".join(message.split())  # one line, whatever it quotes
    if len(message) > 1000:
        message = message[:1000] + "..."
    print(f"error: {message}", file=sys.stderr)
    return code
