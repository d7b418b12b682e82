"""A minimal reader for MATLAB v5 ``.mat`` files, in NumPy (no SciPy).

SBD stores its class labels as ``cls/<id>.mat`` holding a struct ``GTcls``
whose field ``Segmentation`` is the ``uint8 [H, W]`` class map. This reader
covers what such files use: numeric arrays of every class, char arrays,
structs, cells, zlib-compressed variables and both byte orders. Sparse arrays
(SBD's ``Boundaries``) are skipped and read as ``None``.

Format (MathWorks, "MAT-File Format", v5): a 128-byte header whose last two
bytes are ``IM`` (little-endian) or ``MI`` (big-endian), then data elements,
each an 8-byte tag (type, byte count) and its data padded to 8 bytes; a tag
whose upper 16 bits are non-zero is a "small element" with up to 4 bytes of
data inside the tag. A variable is a ``miMATRIX`` element (possibly inside a
``miCOMPRESSED`` one) holding array flags, dimensions, a name and the data in
column-major order.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

MI_MATRIX, MI_COMPRESSED = 14, 15
# data types of data elements
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4",
              9: "f8", 12: "i8", 13: "u8", 16: "u1", 17: "u2", 18: "u4"}  # fmt: skip
# array classes of numeric miMATRIX arrays
_CLASS_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2",
                 12: "i4", 13: "u4", 14: "i8", 15: "u8"}  # fmt: skip
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5


def loadmat(path) -> dict:
    """Read the variables of a MATLAB v5 file: ``{name: value}``.

    Numeric arrays come back as NumPy arrays with MATLAB's shape, structs as
    dicts (an array of structs as a list of dicts), cells as lists, char
    arrays as ``str``.
    """
    data = Path(path).read_bytes()
    if len(data) < 128:
        raise ValueError(f"{path}: too short for a MATLAB v5 file")
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if order is None or data[:6] == b"\x89HDF\r\n":
        raise ValueError(f"{path}: not a MATLAB v5 file (v7.3 HDF5 files are not "
                         "supported)")
    out, pos = {}, 128
    while pos + 8 <= len(data):
        mtype, body, pos = _element(data, pos, order)
        if mtype == MI_COMPRESSED:
            mtype, body, _ = _element(zlib.decompress(body), 0, order)
        if mtype == MI_MATRIX:
            name, value = _matrix(body, order)
            out[name] = value
    return out


def _element(buf: bytes, pos: int, order: str):
    """(type, data bytes, position of the next element) of the element at pos."""
    (word,) = struct.unpack_from(order + "I", buf, pos)
    if word >> 16:  # small element: byte count in the upper half of the tag
        n = word >> 16
        return word & 0xFFFF, buf[pos + 4 : pos + 4 + n], pos + 8
    mtype, n = struct.unpack_from(order + "II", buf, pos)
    start = pos + 8
    # compressed elements are not padded; everything else is, to 8 bytes
    step = n if mtype == MI_COMPRESSED else (n + 7) // 8 * 8
    return mtype, buf[start : start + n], start + step


def _numbers(mtype: int, body: bytes, order: str) -> np.ndarray:
    if mtype not in _MI_DTYPES:
        raise ValueError(f"unsupported MATLAB data type {mtype}")
    return np.frombuffer(body, np.dtype(order + _MI_DTYPES[mtype]))


def _matrix(body: bytes, order: str):
    """(name, value) of one miMATRIX element's data."""
    if not body:  # an empty matrix, e.g. an unset struct field
        return "", np.zeros((0, 0))
    p = 0
    _, flags, p = _element(body, p, order)
    flags = int(_numbers(6, flags, order)[0])
    cls, is_complex = flags & 0xFF, bool(flags & 0x800)
    mtype, dims, p = _element(body, p, order)
    dims = tuple(int(d) for d in _numbers(mtype, dims, order))
    _, name, p = _element(body, p, order)
    name = name.decode("ascii")
    count = int(np.prod(dims))
    if cls in (_STRUCT, _OBJECT):
        if cls == _OBJECT:
            _, _, p = _element(body, p, order)  # the class name
        mtype, length, p = _element(body, p, order)
        length = int(_numbers(mtype, length, order)[0])
        _, raw, p = _element(body, p, order)
        fields = [raw[i : i + length].split(b"\0")[0].decode("ascii")
                  for i in range(0, len(raw), length)]
        records = []
        for _ in range(count):
            record = {}
            for field in fields:
                _, sub, p = _element(body, p, order)
                record[field] = _matrix(sub, order)[1]
            records.append(record)
        return name, records[0] if count == 1 else records
    if cls == _CELL:
        items = []
        for _ in range(count):
            _, sub, p = _element(body, p, order)
            items.append(_matrix(sub, order)[1])
        return name, items
    if cls == _SPARSE:
        return name, None
    mtype, real, p = _element(body, p, order)
    values = _numbers(mtype, real, order)
    if cls == _CHAR:
        return name, "".join(map(chr, values.astype(np.int64)))
    if cls not in _CLASS_DTYPES:
        raise ValueError(f"unsupported MATLAB array class {cls} in {name!r}")
    values = values.astype(_CLASS_DTYPES[cls])
    if is_complex:
        mtype, imag, p = _element(body, p, order)
        values = values + 1j * _numbers(mtype, imag, order)
    return name, values.reshape(dims, order="F")
