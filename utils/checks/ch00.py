"""Checks for chapter 00 (introduction)."""

from __future__ import annotations

import numpy as np
import torch

from utils.checks.common import assert_close, assert_equal, call, fail, ok
from utils.data import formats
from utils.models.tiny_fcn import TinyFCN as ReferenceTinyFCN


def check_colorize(colorize) -> None:
    """``colorize(label, palette)`` against :func:`utils.data.formats.colorize`."""
    hint = (
        "index the palette with the label map: palette[label] gives one RGB row "
        "per pixel"
    )
    palette = formats.voc_palette()
    label = np.array([[0, 1, 2], [255, 3, 0]], dtype=np.int64)
    got = call(colorize, label, palette, what="colorize", hint=hint)
    got = np.asarray(got)
    assert_equal(got, formats.colorize(label, palette), "colorize of a 2x3 map", hint)
    if got.dtype != np.uint8:
        fail("colorize: wrong dtype", "uint8", got.dtype, "keep the palette's dtype")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 21, size=(17, 23))
    assert_equal(
        colorize(big, palette),
        formats.colorize(big, palette),
        "colorize of a random 17x23 map",
        hint,
    )
    ok("colorize matches the reference, ignore pixels included")


def check_to_train_ids(to_train_ids) -> None:
    """Cityscapes labelIds to trainIds against the reference lookup table."""
    hint = (
        "build a 256-entry table filled with 255, set table[labelId] = trainId "
        "for the 19 classes, then index it with the whole map"
    )
    every_id = np.arange(34, dtype=np.int64).reshape(2, 17)
    got = call(to_train_ids, every_id, what="to_train_ids", hint=hint)
    assert_equal(
        got,
        formats.cityscapes_to_train_ids(every_id),
        "trainIds of labelIds 0..33",
        hint,
    )
    rng = np.random.default_rng(1)
    label_ids = rng.integers(0, 34, size=(32, 64)).astype(np.uint8)
    assert_equal(
        to_train_ids(label_ids),
        formats.cityscapes_to_train_ids(label_ids),
        "trainIds of a random uint8 labelIds map",
        hint,
    )
    ok("labelIds -> trainIds matches the reference for all 34 labelIds")


def check_rle_decode(rle_decode) -> None:
    """COCO RLE decoding against :func:`utils.data.formats.rle_decode`."""
    hint = (
        "np.repeat the values 0, 1, 0, 1, ... by the counts, then remember that "
        "COCO runs go down the columns: reshape to (width, height) and transpose"
    )
    cases = [
        ([2, 3, 1], 2, 3),  # starts with zeros
        ([0, 4, 2], 3, 2),  # starts with ones: the first count is 0
        ([6], 2, 3),  # empty mask
        ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 3, 4),  # a checkerboard-like pattern
    ]
    for counts, h, w in cases:
        got = call(rle_decode, counts, h, w, what="rle_decode", hint=hint)
        assert_equal(
            np.asarray(got).astype(np.uint8),
            formats.rle_decode(counts, h, w),
            f"rle_decode({counts}, {h}, {w})",
            hint,
        )
    rng = np.random.default_rng(2)
    mask = (rng.random((9, 13)) < 0.4).astype(np.uint8)
    counts = formats.rle_encode(mask)["counts"]
    assert_equal(
        np.asarray(rle_decode(counts, 9, 13)).astype(np.uint8),
        mask,
        "rle_decode of a random 9x13 mask",
        hint,
    )
    ok("rle_decode matches the reference (column-major runs, leading zero runs)")


def check_tiny_fcn(TinyFCN) -> None:
    """The learner's TinyFCN gives the canonical model's outputs, same weights."""
    hint = (
        "encoder, then classifier, then F.interpolate(scores, size=(H, W), "
        "mode='bilinear', align_corners=False)"
    )
    torch.manual_seed(0)
    reference = ReferenceTinyFCN(num_classes=5, width=0.25).eval()
    mine = call(TinyFCN, 5, 0.25, what="TinyFCN(5, width=0.25)", hint=hint).eval()
    try:
        mine.load_state_dict(reference.state_dict())
    except RuntimeError as err:
        fail(
            "TinyFCN: parameters differ from the reference",
            "the names and shapes of utils.models.TinyFCN",
            str(err).splitlines()[0],
            "keep the layers of __init__ as given",
        )
    for size in ((32, 32), (37, 45)):
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            got = call(mine, x, what="TinyFCN.forward", hint=hint)
            expected = reference(x)
        assert_close(
            got, expected, f"TinyFCN output for input {list(x.shape)}", hint, atol=1e-5
        )
    ok("TinyFCN gives the reference's scores, odd input sizes included")
