"""Hostile archives, built byte by byte for the tests (nothing downloaded).

Each builder returns the archive's bytes. The zip builders write the format by
hand (``struct``) where ``zipfile`` would refuse to write what an attacker
can: forged sizes, flags and compression methods, symlink members whose
"target" is huge.
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import stat
import struct
import subprocess
import tarfile
import time
import zipfile
import zlib
from pathlib import Path


def tar_bytes(members, mode: str = "w", fmt=tarfile.GNU_FORMAT) -> bytes:
    """members: ``(name, bytes)`` files, ``(name, None)`` folders,
    ``(name, ("sym"|"hard", target))`` links, or ready ``TarInfo`` objects
    (with their data as ``(info, bytes)``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:
        for name, content in members:
            if isinstance(name, tarfile.TarInfo):
                tf.addfile(name, io.BytesIO(content) if content is not None else None)
                continue
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "sym" else tarfile.LNKTYPE
                info.linkname = content[1]
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def tar_header_offsets(data: bytes) -> list[int]:
    """Byte offset of each member's header in an uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [m.offset for m in tf.getmembers()]


def zip_bytes(members) -> bytes:
    """members: ``(name, bytes)`` files, ``(name, None)`` folders,
    ``(name, ("sym", target))`` symbolic links as Info-ZIP stores them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members:
            if content is None:
                zf.writestr(name.rstrip("/") + "/", b"")
            elif isinstance(content, tuple):
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, content[1])
            else:
                zf.writestr(name, content)
    return buf.getvalue()


def raw_zip(entries) -> bytes:
    """A zip written by hand. entries: dicts with ``name``, ``payload`` (the
    stored, already compressed bytes), ``size`` (declared uncompressed),
    ``crc``, and optional ``method`` (8), ``flags`` (0), ``mode`` (0o100644)."""
    out, central = io.BytesIO(), io.BytesIO()
    for e in entries:
        name = e["name"].encode()
        method, flags = e.get("method", 8), e.get("flags", 0)
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0x21,
                              e["crc"], len(e["payload"]), e["size"], len(name), 0))
        out.write(name)
        out.write(e["payload"])
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0x0314, 20, flags,
                                  method, 0, 0x21, e["crc"], len(e["payload"]),
                                  e["size"], len(name), 0, 0, 0, 0,
                                  e.get("mode", 0o100644) << 16, offset))
        central.write(name)
    start, cd = out.tell(), central.getvalue()
    out.write(cd)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                          len(cd), start, 0))
    return out.getvalue()


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def file_entry(name: str, data: bytes, **kw) -> dict:
    return {"name": name, "payload": deflated(data), "size": len(data),
            "crc": zlib.crc32(data), **kw}


def zip_bomb(size: int = 1 << 30) -> bytes:
    """An honest bomb: one member of ``size`` zero bytes, about ``size / 1000``
    bytes of deflate, with its true size and CRC. Built in a second: the
    deflate of 1 MiB of zeros, flushed on a byte boundary, repeats verbatim."""
    mib = 1 << 20
    assert size % mib == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * mib) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(b"\0" * mib) + c.flush(zlib.Z_FULL_FLUSH)
    payload = block + again * (size // mib - 1) + c.flush()
    crc, zeros = 0, b"\0" * mib
    for _ in range(size // mib):
        crc = zlib.crc32(zeros, crc)
    return raw_zip([{"name": "bomb/zeros.bin", "payload": payload, "size": size,
                     "crc": crc}])


def huge_symlink_zip(target_size: int) -> bytes:
    """A zip whose one member is a symlink with a ``target_size``-byte target."""
    target = b"a" * target_size
    return raw_zip([{"name": "top/link", "payload": deflated(target),
                     "size": target_size, "crc": zlib.crc32(target),
                     "mode": stat.S_IFLNK | 0o777}])


def symlink_chain(fmt: str) -> bytes:
    """``a/up -> ..``, then ``a/up/S -> ..``, then the file ``a/up/S/x``: with
    links made, ``x`` lands two levels above the target."""
    members = [("a/", None), ("a/up", ("sym", "..")), ("a/up/S", ("sym", "..")),
               ("a/up/S/x", b"escaped")]
    if fmt == "zip":
        return zip_bytes(members)
    return tar_bytes([(n.rstrip("/"), c) for n, c in members], "w:gz")


def realpath_overflow_tar(dest: Path) -> bytes:
    """The CVE-2025-4517 construction against extraction into ``dest``: nested
    folders with long names reached through one-letter symlinks, so that
    ``os.path.realpath`` gives up past PATH_MAX; a final link climbs back out,
    ``escape`` points at ``dest``'s parent, a hard link ``flaglink`` to
    ``escape/flag`` lets the next member overwrite the file ``flag`` there,
    and ``escape/newfile`` creates a new one."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(dest.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(dest)) - 1) // (len(steps) + 1))
    members, path = [], ""
    for step in steps:
        members.append((os.path.join(path, component), None))
        members.append((os.path.join(path, step), ("sym", component)))
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append((linkpath, ("sym", os.path.join(*[".."] * len(steps)))))
    members.append(("escape", ("sym", os.path.join(linkpath, ".."))))
    members.append(("flaglink", ("hard", "escape/flag")))
    members.append(("flaglink", b"overwrite"))
    members.append(("escape/newfile", b"new"))
    return tar_bytes(members, "w", tarfile.PAX_FORMAT)


def extended_header_tar(kind: bytes, size: int) -> bytes:
    """A tar that opens with a GNU long-link (``b"K"``) or pax (``b"x"``) header
    of ``size`` bytes, then a symlink that would use it."""
    info = tarfile.TarInfo("././@LongLink" if kind == b"K" else "pax")
    info.type, info.size = kind, size
    body = (b"%d path=" % size).ljust(size - 1, b"a") + b"\n" if kind == b"x" \
        else b"a" * size
    link = tarfile.TarInfo("top/link")
    link.type, link.linkname = tarfile.SYMTYPE, "x"
    return gzip.compress(tar_bytes([(info, body), (link, None)]), 1)


def declared_size_tar(size: int) -> bytes:
    """A .tar.gz whose one file header declares ``size`` bytes (base-256 past
    8 GiB) and holds none of them."""
    info = tarfile.TarInfo("bomb/huge.bin")
    info.size = size
    header = info.tobuf(tarfile.GNU_FORMAT)
    return gzip.compress(header + b"\0" * 1024)


def kill_mid_way(argv, ready, cwd, timeout: float = 120.0) -> Path:
    """Start ``argv``, freeze it (SIGSTOP) as soon as ``ready()`` returns a path,
    then SIGKILL it; return that path. ``ready`` looks at the disk, so the kill
    lands in the middle of the work, however fast or slow the machine is."""
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    found = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and child.poll() is None:
            found = ready()
            if found is not None:
                child.send_signal(signal.SIGSTOP)
                break
            time.sleep(0.002)
        assert found is not None, child.communicate()[1]
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return found
