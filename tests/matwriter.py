"""An independent MATLAB v5 writer for the tests (written from the format
description, not from data_scripts.matlab), enough for SBD's GTcls files."""

import struct
import zlib

import numpy as np

_TYPES = {np.dtype("uint8"): (2, 9), np.dtype("int32"): (5, 12),
          np.dtype("float64"): (9, 6), np.dtype("uint16"): (4, 11)}  # fmt: skip


def _tag(mtype, data, order):
    if 0 < len(data) <= 4:  # small data element
        return _small(mtype, data, order)
    pad = b"\0" * (-len(data) % 8)
    return struct.pack(order + "II", mtype, len(data)) + data + pad


def _small(mtype, data, order):
    word = (len(data) << 16) | mtype
    return struct.pack(order + "I", word) + data + b"\0" * (4 - len(data))


def _flags(cls, order):
    return _tag(6, struct.pack(order + "II", cls, 0), order)


def _header(dims, name, cls, order):
    dims = struct.pack(order + f"{len(dims)}i", *dims)
    return _flags(cls, order) + _tag(5, dims, order) + _tag(1, name.encode(), order)


def numeric(name, array, order="<", stored=None):
    """A numeric miMATRIX; ``stored`` is a smaller dtype to store the data in."""
    array = np.asarray(array)
    mi, cls = _TYPES[array.dtype]
    data = array.astype(stored or array.dtype)
    mi = _TYPES[data.dtype][0]
    raw = data.astype(data.dtype.newbyteorder(order)).tobytes(order="F")
    body = _header(array.shape, name, cls, order) + _tag(mi, raw, order)
    return _tag(14, body, order)


def sparse_placeholder(name, order="<"):
    """A 2x2 all-zero sparse matrix (class 5): ir, jc, pr."""
    body = (_header((2, 2), name, 5, order) + _tag(5, b"", order)
            + _tag(5, struct.pack(order + "3i", 0, 0, 0), order) + _tag(9, b"", order))
    return _tag(14, body, order)


def struct_(name, fields, order="<"):
    """A 1x1 struct; ``fields`` is a list of (field name, miMATRIX bytes)."""
    length = 32
    names = b"".join(f.encode().ljust(length, b"\0") for f, _ in fields)
    body = (_header((1, 1), name, 2, order) + _tag(5, struct.pack(order + "i", length),
                                                   order)
            + _tag(1, names, order) + b"".join(v for _, v in fields))
    return _tag(14, body, order)


def cell(name, items, order="<"):
    body = _header((len(items), 1), name, 1, order) + b"".join(items)
    return _tag(14, body, order)


def write_mat(path, variables, order="<", compress=True):
    """variables: miMATRIX element bytes (from the functions above)."""
    text = b"MATLAB 5.0 MAT-file, written by the course's tests".ljust(116, b" ")
    header = text + b"\0" * 8 + struct.pack(order + "H", 0x0100)
    header += b"IM" if order == "<" else b"MI"
    out = header
    for element in variables:
        if compress:
            z = zlib.compress(element)
            out += struct.pack(order + "II", 15, len(z)) + z
        else:
            out += element
    with open(path, "wb") as f:
        f.write(out)


def write_gtcls(path, segmentation, order="<", compress=True):
    """An SBD-style cls file: struct GTcls {Boundaries, Segmentation,
    CategoriesPresent}."""
    seg = numeric("", np.asarray(segmentation, np.uint8), order)
    bounds = cell("", [sparse_placeholder("", order)], order)
    present = np.unique(segmentation)
    present = numeric("", present[present > 0].astype(np.float64)[:, None], order,
                      stored=np.uint8)
    gt = struct_("GTcls", [("Boundaries", bounds), ("Segmentation", seg),
                           ("CategoriesPresent", present)], order)
    write_mat(path, [gt], order, compress)
