"""The one downloader every data script uses: resumable, verified, atomic.

:func:`download` streams ``url`` into ``DEST.part`` next to ``dest``. When the
connection drops it asks the server for the rest with an HTTP ``Range``
request (on the next attempt, or on the next run: the ``.part`` file stays).
Once the file is complete its checksum is computed from the bytes on disk and
compared with the expected one; only a match is renamed to ``dest``, so
``dest`` either does not exist or is the verified file. A mismatch removes the
``.part`` file and raises :class:`ChecksumError` naming both digests.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

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
             checksum: Checksum | None = None, progress: bool = True,
             retries: int = 5, retry_wait: float = 1.0,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    ``sha256`` (full, 64 hex digits) or ``checksum`` (any algorithm of
    :mod:`data_scripts.sources`) is checked after the download completes; with
    neither, the file is taken as it comes. An existing ``dest`` with the right
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
            return dest  # nothing to check it against: keep it
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
            _fetch(url, part, progress, timeout)
            break
        except _Interrupted as err:
            attempt += 1
            if attempt > retries:
                raise DownloadError(
                    f"downloading {url} failed after {retries} retries: {err}. "
                    f"The partial file {part} is kept: run the same command again "
                    "to resume, or point --mirror at another host."
                ) from None
            time.sleep(retry_wait * attempt)
    if checksum is not None:
        actual = file_digest(part, checksum.hash_name)
        if not checksum.matches(actual):
            part.unlink()
            what = ("sha256 starting with" if checksum.algorithm == "sha256-prefix"
                    else checksum.algorithm)
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {what} {checksum.value}, "
                f"got {actual}. The download was deleted; run the command again, "
                "or use --mirror if this host serves a different file."
            )
    os.replace(part, dest)  # atomic on one file system: dest is whole or absent
    return dest


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One attempt: append the missing bytes to ``part``, or start it afresh."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            # "Range Not Satisfiable": complete if the size matches, else stale
            size = err.headers.get("Content-Range", "").rpartition("/")[2]
            if size == str(have):
                return
            part.unlink()
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
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if have and response.status == 206:
            if _range_start(response) != have:
                part.unlink()  # an unexpected range: start again from byte 0
                raise _Interrupted(f"asked for bytes {have}- of {url}, got "
                                   f"{response.headers.get('Content-Range')}")
            mode = "ab"
        else:  # a fresh start, or the server ignored the Range header
            have, mode = 0, "wb"
        total = have + length if length is not None else None
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
                f.write(chunk)
                have += len(chunk)
                bar.update(len(chunk))
    if total is not None and have < total:
        raise _Interrupted(f"connection closed after {have} of {total} bytes")


def _range_start(response) -> int | None:
    """First byte of a 206 response, from ``Content-Range: bytes a-b/n``."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None
