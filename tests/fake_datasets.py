"""Tiny archives in the real datasets' layouts, built in memory for the tests."""

import io
import tarfile
import zipfile

import numpy as np
from PIL import Image

from utils.data.formats import voc_palette


def jpeg(rng, h=12, w=16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png(array, palette=False) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(array, np.uint8), mode="P" if palette else "L")
    if palette:
        img.putpalette(voc_palette().reshape(-1).tolist())
    img.save(buf, "PNG")
    return buf.getvalue()


def rgb_png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8), mode="RGB").save(buf, "PNG")
    return buf.getvalue()


def tar_bytes(files: dict, mode="w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
    return buf.getvalue()


def labels(rng, classes, h=12, w=16, ignore=True):
    label = rng.choice(np.asarray(classes), size=(h, w)).astype(np.uint8)
    if ignore:
        label[0, :] = 255
    return label
