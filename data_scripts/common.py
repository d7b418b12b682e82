"""What every data script shares: its command line, downloads, markers, report.

A script prepares one dataset under ``--root DIR``: archives go to
``DIR/downloads/``, each finished step leaves its output renamed into place
(so it is whole or absent), and the last step writes ``DIR/prepared.json``
with the split sizes and class counts. A second run finds ``prepared.json``
and only prints the summary again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from data_scripts import sources
from data_scripts.download import DownloadError, apply_mirror, download
from data_scripts.extract import ArchiveError, extract

MANIFEST = "prepared.json"


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


def fetch(key: str, args, folder: Path | None = None) -> Path:
    """Download ``sources.SOURCES[key]`` into ``folder`` (default
    ``ROOT/downloads``), verified by its checksum."""
    source = sources.SOURCES[key]
    url = apply_mirror(source.url, args.mirror)
    dest = (folder or args.root / "downloads") / source.filename
    if not dest.exists():
        print(f"download {url} ({source.size})")
    return download(url, dest, checksum=source.checksum,
                    progress=not args.no_progress)


def extract_part(archive: Path, inner: str, dest: Path, check=None) -> Path:
    """Extract ``archive`` and move its folder ``inner`` (a glob) to ``dest``.

    ``check(folder)``, if given, inspects the extracted folder and raises when
    its content is wrong, before anything is moved into place. Skipped when
    ``dest`` exists; an earlier run's leftovers are removed first.
    """
    if dest.exists():
        return dest
    staging = dest.parent / f".{dest.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    print(f"extract {archive.name}")
    extract(archive, staging)
    found = next(iter(sorted(staging.glob(inner))), staging / inner)
    try:
        if not found.is_dir():
            raise ArchiveError(f"{archive} has no folder {inner}/; is it the right "
                               "file? Delete it and run the command again.")
        if check is not None:
            check(found)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(found, dest)
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def write_json(path: Path, obj) -> None:
    """Write JSON to a temporary file and rename it, so it is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_manifest(root: Path) -> dict | None:
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


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


def finish(args, manifest: dict) -> dict:
    manifest = {"root": str(args.root), **manifest}
    write_json(args.root / MANIFEST, manifest)
    report(manifest)
    return manifest


def already_prepared(args, **options) -> bool:
    """True (and the summary printed) when a run with these options finished."""
    manifest = read_manifest(args.root)
    if manifest is None or manifest.get("options", {}) != options:
        return False
    print(f"{args.root / MANIFEST} exists: nothing to do")
    report(manifest)
    return True


def run(main, argv=None) -> int:
    """Run ``main(argv)``; turn expected failures into a message and exit code 1."""
    try:
        main(argv)
    except (DownloadError, ArchiveError, FileNotFoundError, ValueError,
            TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
