"""The one downloader every data script uses: resumable, verified, atomic.

:func:`download` streams ``url`` into ``DEST.part`` next to ``dest``. When the
connection drops it asks the server for the rest with an HTTP ``Range``
request (on the next attempt, or on the next run: the ``.part`` file stays).

A resumed download is never spliced from two versions of a file: the first
response's validators (its strong ``ETag``, else ``Last-Modified``) and total
size are recorded next to the part (``DEST.part.json``); the resume sends
them as ``If-Range``, so a server whose file changed answers with the whole
new file, and a ``206`` whose ``Content-Range`` total or validators differ
from the recorded ones starts the download again. A part with nothing
recorded is started again too.

The size a server announces is checked against the free disk space (and
``max_bytes``) before anything is written, and a full disk is reported as
such. Once the file is complete its checksum is computed from the bytes on
disk and compared with the expected one, and ``verify(path)`` (say, a full
decode of an image) runs on it; only then is it renamed to ``dest``, so
``dest`` either does not exist or is the verified file. A mismatch removes
the ``.part`` file and raises :class:`ChecksumError` naming both digests.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from data_scripts.disk import disk_full, is_disk_full, require_space, size_text
from data_scripts.sources import Checksum

USER_AGENT = "segmentation-from-scratch-data-scripts/1.0"
CHUNK = 1 << 20  # bytes read per call; also the progress bar's step


class DownloadError(RuntimeError):
    """A download failed; the message says what failed and how to retry."""


class ChecksumError(DownloadError):
    """A complete download does not have the expected checksum."""


class _Interrupted(Exception):
    """The transfer stopped early; another attempt can resume it."""


def apply_mirror(url: str, mirror: str | None) -> str:
    """Replace the scheme and host of ``url`` by ``mirror`` (which may add a path).

    ``apply_mirror("http://host.robots.ox.ac.uk/pascal/VOC/a.tar",
    "https://mirror.example/data")`` is
    ``"https://mirror.example/data/pascal/VOC/a.tar"``: a mirror keeps the
    original paths under its own prefix.
    """
    if not mirror:
        return url
    m = urllib.parse.urlsplit(mirror)
    if m.scheme not in ("http", "https") or not m.netloc:
        raise ValueError(f"--mirror must be an http(s) URL like https://host/path, "
                         f"got {mirror!r}")
    u = urllib.parse.urlsplit(url)
    path = m.path.rstrip("/") + u.path
    return urllib.parse.urlunsplit((m.scheme, m.netloc, path, u.query, ""))


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path``, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest, sha256: str | None = None, *,
             checksum: Checksum | None = None, verify=None,
             max_bytes: int | None = None, progress: bool = True,
             retries: int = 5, retry_wait: float = 1.0,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    ``sha256`` (full, 64 hex digits) or ``checksum`` (any algorithm of
    :mod:`data_scripts.sources`) is checked after the download completes, then
    ``verify(path)``, which raises ``ValueError`` or ``OSError`` for a file
    that is not what was expected; with none of them, the file is taken as it
    comes. ``max_bytes`` bounds its size. An existing ``dest`` with the right
    checksum is not downloaded again. A dropped connection is resumed up to
    ``retries`` times, waiting ``retry_wait * attempt`` seconds in between.
    """
    dest = Path(dest)
    if sha256 is not None:
        if checksum is not None:
            raise ValueError("give sha256 or checksum, not both")
        checksum = Checksum("sha256", sha256.lower())
    if dest.exists():
        if checksum is None:
            return dest  # nothing to check it against: it was checked when made
        actual = file_digest(dest, checksum.hash_name)
        if checksum.matches(actual):
            return dest
        print(f"{dest} has {checksum.hash_name} {actual}, expected "
              f"{checksum.value}: downloading it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch(url, part, progress, timeout, max_bytes)
            break
        except _Interrupted as err:
            attempt += 1
            if attempt > retries:
                kept = (f"The partial file {part} is kept: run the same command "
                        "again to resume" if part.exists() else
                        "Run the same command again later")
                raise DownloadError(
                    f"downloading {url} failed after {retries} retries: {err}. "
                    f"{kept}, or point --mirror at another host."
                ) from None
            time.sleep(retry_wait * attempt)
    if checksum is not None:
        actual = file_digest(part, checksum.hash_name)
        if not checksum.matches(actual):
            _discard(part)
            what = ("sha256 starting with" if checksum.algorithm == "sha256-prefix"
                    else checksum.algorithm)
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {what} {checksum.value}, "
                f"got {actual}. The download was deleted; run the command again, "
                "or use --mirror if this host serves a different file."
            )
    if verify is not None:
        try:
            verify(part)
        except (ValueError, OSError) as err:
            _discard(part)
            raise DownloadError(
                f"{url} is not what was expected: {err}. The download was deleted; "
                "run the command again to download it afresh, or use --mirror if "
                "this host serves a broken file."
            ) from None
    os.replace(part, dest)  # atomic on one file system: dest is whole or absent
    _meta_path(part).unlink(missing_ok=True)
    return dest


def _meta_path(part: Path) -> Path:
    """Where the validators of the version that ``part`` holds are recorded."""
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _recorded(part: Path, url: str) -> dict | None:
    """The validators recorded for ``part``, if they allow resuming it."""
    try:
        meta = json.loads(_meta_path(part).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(meta, dict) or meta.get("url") != url
            or not isinstance(meta.get("total"), int)
            or not (meta.get("etag") or meta.get("last_modified"))):
        return None
    return meta


def _validators(response) -> dict:
    etag = response.headers.get("ETag")
    return {"etag": etag if etag and not etag.startswith("W/") else None,
            "last_modified": response.headers.get("Last-Modified")}


def _fetch(url: str, part: Path, progress: bool, timeout: float,
           max_bytes: int | None) -> None:
    """One attempt: append the missing bytes to ``part``, or start it afresh."""
    have = part.stat().st_size if part.exists() else 0
    meta = _recorded(part, url) if have else None
    if have and meta is None:
        print(f"{part.name}: no record of which version of {url} it holds; "
              "starting again")
        _discard(part)
        have = 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        # a server whose file changed since sends all of the new one (200)
        headers["If-Range"] = meta["etag"] or meta["last_modified"]
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            # "Range Not Satisfiable": complete if the sizes agree, else stale
            size = err.headers.get("Content-Range", "").rpartition("/")[2]
            if size == str(have) == str(meta["total"]):
                return
            _discard(part)
            raise _Interrupted(f"{part.name} does not match the file on the "
                               "server; starting again") from None
        if err.code >= 500:
            raise _Interrupted(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(
            f"{url}: HTTP {err.code} {err.reason}. Check the URL, or point "
            "--mirror at a host that has the file."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Interrupted(f"cannot connect: {err}") from None
    with response:
        length = _int(response.headers.get("Content-Length"))
        validators = _validators(response)
        if have and response.status == 206:
            start, total = _content_range(response)
            changed = [k for k, v in validators.items() if v and meta.get(k)
                       and v != meta[k]]
            if start != have or total != meta["total"] or changed:
                _discard(part)
                raise _Interrupted(
                    f"asked for bytes {have}- of the {meta['total']}-byte file, the "
                    f"server sent {response.headers.get('Content-Range')} "
                    f"{'of a changed file ' if changed else ''}; starting again")
            mode = "ab"
        else:  # a fresh start, a changed file, or a server that ignores Range
            total, have, mode = length, 0, "wb"
        if total is not None:
            if max_bytes is not None and total > max_bytes:
                _discard(part)
                raise DownloadError(f"{url} is {size_text(total)}, more than the "
                                    f"{size_text(max_bytes)} such a file can be")
            require_space(total - have, part.parent, f"downloading {url}")
        if mode == "wb":  # what a later resume must find unchanged
            _meta_path(part).write_text(json.dumps({"url": url, "total": total,
                                                    **validators}))
        with open(part, mode) as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True,
            desc=part.name[: -len(".part")], disable=not progress,
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise _Interrupted(f"connection lost after {have} bytes: "
                                       f"{err!r}") from None
                if not chunk:
                    break
                have += len(chunk)
                if max_bytes is not None and have > max_bytes:
                    f.close()
                    _discard(part)
                    raise DownloadError(f"{url} sent more than the "
                                        f"{size_text(max_bytes)} such a file can be")
                try:
                    f.write(chunk)
                except OSError as err:
                    if is_disk_full(err):
                        raise disk_full(err, f"downloading {url} to {part}") from None
                    raise
                bar.update(len(chunk))
    if total is not None and have < total:
        raise _Interrupted(f"connection closed after {have} of {total} bytes")


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(response) -> tuple[int | None, int | None]:
    """First byte and total size of a 206, from ``Content-Range: bytes a-b/n``."""
    value = response.headers.get("Content-Range", "")
    try:
        span, total = value.split()[1].split("/")
        return int(span.split("-")[0]), _int(total)
    except (IndexError, ValueError):
        return None, None
