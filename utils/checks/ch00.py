"""Checks for chapter 00 (introduction): label formats and a first network.

Each compares the learner's function with the course's own implementation on
fixed inputs and refuses that implementation as an answer (see
:mod:`utils.checks.common`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from utils.checks.common import (
    assert_close,
    assert_equal,
    exercise,
    fail,
    learner,
    ok,
)
from utils.data import formats, shapes, targets
from utils.models.tiny_fcn import TinyFCN as ReferenceTinyFCN


@exercise(
    forbid=[formats.colorize],
    hints=[
        "a palette is a lookup table: row k holds the colour of class k, so "
        "colouring a map means looking up every pixel's row",
        "NumPy indexes an array with a whole array of integers at once: the "
        "result has the index array's shape, with the indexed row's shape after it",
    ],
)
def check_colorize(colorize) -> None:
    """``colorize(label, palette)``: ``uint8 [H, W, 3]``, ``palette[label]``."""
    palette = formats.voc_palette()
    rng = np.random.default_rng(0)
    cases = {
        "a 2x3 map with an ignore pixel (255)": np.array([[0, 1, 2], [255, 3, 0]]),
        "a random 17x23 map": rng.integers(0, 21, size=(17, 23)),
    }
    for name, label in cases.items():
        what = f"colorize of {name}"
        got = learner(colorize, label.copy(), palette.copy(), what=what)
        expected = formats.colorize(label, palette)
        if isinstance(got, np.ndarray) and got.shape == (3, *label.shape):
            fail(f"{what}: wrong shape", list(expected.shape), list(got.shape),
                 hint="the colour is the last axis: [H, W, 3]")
        if isinstance(got, np.ndarray) and got.shape == expected.shape \
                and got.dtype != np.uint8:
            fail(f"{what}: wrong dtype", "uint8", got.dtype,
                 hint="keep the palette's dtype: colours are bytes")
        assert_equal(got, expected, what)
    ok("colorize gives every pixel its class colour, ignore pixels included")


@exercise(
    forbid=[formats.cityscapes_to_train_ids, formats.cityscapes_lut],
    hints=[
        "every labelId maps to exactly one trainId, so one lookup table indexed "
        "by labelId answers every pixel at once",
        "start from a table in which every entry means 'ignore' (255), then fill "
        "in the 19 labelIds that formats.CITYSCAPES_TRAIN_IDS lists",
    ],
)
def check_to_train_ids(to_train_ids) -> None:
    """Cityscapes labelIds to ``int64`` trainIds (255 for unevaluated ids)."""
    rng = np.random.default_rng(1)
    cases = {
        "labelIds 0..33": np.arange(34, dtype=np.int64).reshape(2, 17),
        "a random uint8 labelIds map": rng.integers(0, 34, (32, 64)).astype(np.uint8),
    }
    for name, label_ids in cases.items():
        got = learner(to_train_ids, label_ids.copy(), what=f"to_train_ids of {name}")
        expected = formats.cityscapes_to_train_ids(label_ids)
        if not isinstance(got, np.ndarray):
            fail(f"to_train_ids of {name}: wrong type", "a NumPy array",
                 type(got).__name__)
        assert_equal(got, expected, f"trainIds of {name}")
        if got.dtype != np.int64:
            fail(f"to_train_ids of {name}: wrong dtype", "int64", got.dtype,
                 hint="trainIds are int64, as every target of the course; a "
                      "uint8 table gives uint8 results")
    ok("labelIds -> trainIds right for all 34 labelIds, uint8 input included")


def _box_masks() -> dict:
    """Masks ``uint8 [N, H, W]`` to box: a Shapes sample's, single pixels at
    the corners, and a mask that touches the right and bottom borders next to
    an empty one."""
    sample = shapes.Shapes("val", 4, shapes.ShapesConfig(image_size=48),
                           task="instance")[3][1]["masks"]
    corners = torch.zeros(3, 5, 7, dtype=torch.uint8)
    corners[0, 0, 0] = corners[1, 4, 6] = corners[2, 2, 3] = 1
    border = torch.zeros(2, 6, 9, dtype=torch.uint8)
    border[0, 3:, 5:] = 1
    return {"the masks of a Shapes image": sample,
            "one-pixel masks at the corners and the centre": corners,
            "a mask at the bottom-right border and an empty mask": border}


@exercise(
    forbid=[targets.boxes_from_masks, shapes.ShapesSample.boxes],
    hints=[
        "a mask's box spans from its first to its last occupied row and column: "
        "find which rows and which columns hold any pixel of the mask",
        "pixel i covers the interval from i to i + 1, so a box ends one past "
        "the last pixel it covers; boxes are (x1, y1, x2, y2), x along the "
        "columns",
    ],
)
def check_boxes_from_masks(boxes_from_masks) -> None:
    """``boxes_from_masks(masks)``: ``float32 [N, 4]`` (x1, y1, x2, y2), x2 =
    last column + 1, zeros for an empty mask."""
    for name, masks in _box_masks().items():
        what = f"boxes_from_masks of {name}"
        got = learner(boxes_from_masks, masks.clone(), what=what)
        expected = targets.boxes_from_masks(masks)
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            found = expected.any(dim=1)  # non-empty masks
            g, e = got.double()[found], expected.double()[found]
            if torch.equal(g[:, :2], e[:, :2]) and torch.equal(g[:, 2:], e[:, 2:] - 1):
                hint = "x2 and y2 are the last column and row here (torchvision's " \
                       "masks_to_boxes does that); pixel i covers [i, i + 1), so " \
                       "the course's boxes end one past them"
            elif torch.equal(g, e[:, [1, 0, 3, 2]]):
                hint = "x and y are swapped: x is the column, y the row, and a " \
                       "box is (x1, y1, x2, y2)"
            elif torch.equal(g, e) and got.dtype != torch.float32:
                hint = "boxes are float32, as in every target of the course"
        assert_equal(got, expected, what, hint=hint)
    ok("boxes_from_masks gives the tightest boxes, x2 and y2 one past the last "
       "pixel, empty masks included")


def _row_major_decode(counts, height, width) -> np.ndarray:
    """The usual mistake: the runs read row by row."""
    flat = np.repeat(np.arange(len(counts)) % 2, counts)
    return flat.reshape(height, width).astype(np.uint8)


@exercise(
    forbid=[formats.rle_decode],
    hints=[
        "the counts alternate: a run of 0s, a run of 1s, a run of 0s, ...; the "
        "first run is always 0s, even when it is empty",
        "COCO lists the pixels column by column (down the first column, then "
        "the next), not row by row as NumPy stores them",
    ],
)
def check_rle_decode(rle_decode) -> None:
    """COCO's uncompressed RLE to a ``[height, width]`` mask of 0 and 1."""
    rng = np.random.default_rng(2)
    random_mask = (rng.random((9, 13)) < 0.4).astype(np.uint8)
    cases = [
        ([2, 3, 1], 2, 3),  # starts with zeros
        ([0, 4, 2], 3, 2),  # starts with ones: the first count is 0
        ([6], 2, 3),  # an empty mask
        ([1] * 12, 3, 4),  # alternating pixels
        (formats.rle_encode(random_mask)["counts"], 9, 13),
    ]
    for counts, h, w in cases:
        what = f"rle_decode({_short_list(counts)}, {h}, {w})"
        got = learner(rle_decode, list(counts), h, w, what=what)
        expected = formats.rle_decode(counts, h, w)
        hint = None
        if isinstance(got, np.ndarray):
            if got.dtype.kind in "biu":  # a bool or int64 mask of 0/1 is fine
                got = got.astype(np.uint8)
            row_major = _row_major_decode(counts, h, w)
            if got.shape == (w, h) and h != w:
                hint = "this is [width, height]: the mask is [height, width]"
            elif got.shape == expected.shape and np.array_equal(got, row_major) \
                    and not np.array_equal(row_major, expected):
                hint = "these are the runs read row by row; COCO's go down columns"
        assert_equal(got, expected, what, hint=hint)
    ok("rle_decode right for column-major runs, a leading empty run and an empty mask")


def _short_list(values) -> str:
    values = list(values)
    return str(values) if len(values) <= 6 else f"[{len(values)} counts]"


@exercise(
    forbid=[ReferenceTinyFCN],
    hints=[
        "three steps: features from the encoder (a quarter of the input's size), "
        "class scores from the classifier, then back to the input's size",
        "upsample to the input's exact height and width (37 is not a multiple "
        "of 4, so a scale factor cannot do it), bilinearly, with "
        "align_corners=False",
    ],
)
def check_tiny_fcn(TinyFCN) -> None:
    """The learner's TinyFCN gives the canonical model's scores, same weights."""
    torch.manual_seed(0)
    reference = ReferenceTinyFCN(num_classes=5, width=0.25).eval()
    mine = learner(TinyFCN, 5, 0.25, what="TinyFCN(5, width=0.25)")
    try:
        mine.load_state_dict(reference.state_dict())
    except (RuntimeError, AttributeError) as err:
        fail("TinyFCN: its layers differ from the ones given",
             "the layers of __init__ as given", str(err).splitlines()[0],
             hint="write forward only; keep __init__ as it is")
    mine.eval()
    for size in ((32, 32), (37, 45)):
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
        what = f"TinyFCN's scores for an input {list(x.shape)}"
        with torch.no_grad():
            got = learner(mine, x, what=what)
            expected = reference(x)
            coarse = reference.classifier(reference.encoder(x))
        hint = None
        if isinstance(got, torch.Tensor) and got.shape == coarse.shape:
            hint = "these are the coarse scores: upsample them to the input's size"
        elif isinstance(got, torch.Tensor) and got.shape == expected.shape:
            for mode, corners in (("bilinear", True), ("nearest", None)):
                alt = F.interpolate(coarse, size=size, mode=mode,
                                    align_corners=corners)
                if torch.allclose(got, alt, atol=1e-5):
                    hint = (f"this is mode={mode!r}, align_corners={corners}: the "
                            "model upsamples bilinearly with align_corners=False")
        assert_close(got, expected, what, hint=hint, atol=1e-5)
    ok("TinyFCN gives the canonical model's scores, odd input sizes included")
