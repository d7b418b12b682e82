"""Label formats of the real datasets, in NumPy (introduced in chapter 00).

- class maps as palette PNGs (PASCAL VOC): :func:`voc_palette`,
  :func:`write_palette_png`, :func:`read_label_png`;
- Cityscapes ``labelIds`` to the 19 ``trainIds``: :func:`cityscapes_to_train_ids`;
- COCO run-length encoding, plain and compressed: :func:`rle_decode`,
  :func:`rle_encode`, :func:`rle_from_string`, :func:`rle_to_string`;
- COCO polygons: :func:`polygon_to_mask`;
- COCO panoptic PNGs, ``id = R + 256 G + 256² B``: :func:`rgb_to_id`, :func:`id_to_rgb`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.data import IGNORE_INDEX


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, ``uint8 [n, 3]``.

    Colour ``i`` spreads the bits of ``i`` over the high bits of R, G and B, so
    small ids get distinct, saturated colours; 255 (ignore) is (224, 224, 192).
    """
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class map ``[H, W]`` of ints to ``uint8 [H, W, 3]`` colours via ``palette``.

    ``palette`` is ``uint8 [K, 3]`` with ``K > label.max()``; give it 256 rows to
    colour the ignore index 255 too.
    """
    label = np.asarray(label)
    palette = np.asarray(palette)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(
            "label must be an integer [H, W] map, got "
            f"{label.dtype} {list(label.shape)}"
        )
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be [K, 3], got {list(palette.shape)}")
    if label.size and (label.min() < 0 or label.max() >= len(palette)):
        raise ValueError(
            f"label values must be in [0, {len(palette)}), got "
            f"[{label.min()}, {label.max()}]"
        )
    return palette.astype(np.uint8)[label]


def write_palette_png(path, label: np.ndarray, palette: np.ndarray | None = None):
    """Write a class map as an 8-bit palette PNG, the way VOC stores labels.

    The file holds the class ids themselves; the palette only tells viewers
    how to colour them.
    """
    from PIL import Image

    label = np.asarray(label)
    if label.ndim != 2 or label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError("label must be [H, W] with values in [0, 255]")
    pal = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(pal.reshape(-1).tolist())
    img.save(path)


def read_label_png(path) -> np.ndarray:
    """Read a label PNG as ``int64 [H, W]``: a palette PNG's indices, or a
    grayscale PNG's values (never the palette's colours)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(
                f"{path}: a label PNG must be palette or grayscale, got mode {img.mode}"
            )
        return np.asarray(img).astype(np.int64)


# Cityscapes: (labelId, trainId) for the 19 evaluated classes; every other
# labelId (0-33 and the license plate's -1) is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip


def cityscapes_lut() -> np.ndarray:
    """``uint8 [256]`` lookup table from labelId to trainId (255 = ignore)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    return lut


def cityscapes_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes ``*_labelIds.png`` array to trainIds, ``int64 [H, W]``."""
    label_ids = np.asarray(label_ids)
    if not np.issubdtype(label_ids.dtype, np.integer):
        raise ValueError(f"labelIds must be integers, got {label_ids.dtype}")
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 255):
        raise ValueError(
            f"labelIds must be in [0, 255], got [{label_ids.min()}, {label_ids.max()}]"
        )
    return cityscapes_lut()[label_ids].astype(np.int64)


def rle_decode(counts, height: int, width: int) -> np.ndarray:
    """COCO's uncompressed RLE to a ``uint8 [height, width]`` mask.

    ``counts`` alternates runs of 0s and 1s, starting with 0s, over the pixels
    in *column-major* order (down the first column, then the next).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts.size and counts.min() < 0):
        raise ValueError("RLE counts must be a flat list of non-negative ints")
    if counts.sum() != height * width:
        raise ValueError(
            f"RLE counts sum to {counts.sum()} but the mask has "
            f"{height}x{width}={height * width} pixels"
        )
    values = np.arange(len(counts)) % 2  # 0, 1, 0, 1, ...
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape(width, height).T.copy()


def rle_encode(mask: np.ndarray) -> dict:
    """A binary ``[H, W]`` mask to COCO's uncompressed RLE dict."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got {list(mask.shape)}")
    flat = mask.T.reshape(-1) > 0  # column-major, as COCO stores it
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # where a run ends
    counts = np.diff(np.concatenate([[0], edges, [flat.size]]))
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])  # the first run counts 0s
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts.tolist()}


def rle_from_string(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths.

    Each run is a signed integer in 5-bit groups (6th bit: more groups follow),
    stored as characters from ``'0'``; from the third run on, the value is the
    difference from the run two places back.
    """
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("compressed RLE string ends in the middle of a run")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {s[p]!r} in compressed RLE")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_string(counts) -> str:
    """Encode run lengths as COCO's compressed RLE string (inverse of
    :func:`rle_from_string`)."""
    counts = [int(c) for c in counts]
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def polygon_to_mask(polygons, height: int, width: int) -> np.ndarray:
    """COCO polygons (lists ``[x1, y1, x2, y2, ...]``) to a ``uint8`` mask.

    Rasterised exactly as COCO's own API does it (``rleFrPoly`` in
    cocoapi's ``maskApi.c``), so masks match pycocotools bit for bit: the
    vertices are scaled by 5 and rounded, every edge is walked one step at a
    time, and where the walk crosses a pixel column's centre line, the first
    pixel below the edge starts or ends a run down that column (RLE is
    column-major). Several polygons of one object are OR-ed, as COCO merges
    them.
    """
    mask = np.zeros((height, width), np.uint8)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(pts)}")
        counts = _polygon_rle_counts(pts, height, width)
        mask |= rle_decode(counts, height, width)
    return mask


def _polygon_rle_counts(pts: np.ndarray, h: int, w: int) -> list[int]:
    """Uncompressed RLE counts of one polygon, following ``rleFrPoly``."""
    scale = 5.0
    # C's (int) cast truncates toward zero.
    x = np.trunc(scale * pts[:, 0] + 0.5).astype(np.int64)
    y = np.trunc(scale * pts[:, 1] + 0.5).astype(np.int64)
    x, y = np.append(x, x[0]), np.append(y, y[0])
    us, vs = [], []
    for j in range(len(pts)):  # walk each edge in unit steps of its long axis
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        steps = np.arange(max(dx, dy) + 1)
        t = max(dx, dy) - steps if flip else steps
        if dx >= dy:
            s = (ye - ys) / dx if dx else 0.0  # dx = 0: one point, s unused
            us.append(t + xs)
            vs.append(np.trunc(ys + s * t + 0.5).astype(np.int64))
        else:
            s = (xe - xs) / dy
            vs.append(t + ys)
            us.append(np.trunc(xs + s * t + 0.5).astype(np.int64))
    u, v = np.concatenate(us), np.concatenate(vs)
    # Where u changes, the walk crosses a column; keep crossings of a centre line.
    moved = np.flatnonzero(u[1:] != u[:-1]) + 1
    uj, up, vj, vp = u[moved], u[moved - 1], v[moved], v[moved - 1]
    xd = (np.where(uj < up, uj, uj - 1) + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = (np.minimum(vj, vp) + 0.5) / scale - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    starts = xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64)
    a = np.sort(np.append(starts, h * w))
    a = np.diff(a, prepend=0).tolist()
    # Two crossings at one pixel cancel: merge the zero-length run away.
    counts, j = [a[0]], 1
    while j < len(a):
        if a[j] > 0:
            counts.append(a[j])
            j += 1
        else:
            j += 1
            if j < len(a):
                counts[-1] += a[j]
                j += 1
    return counts


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG ``uint8 [H, W, 3]`` to segment ids ``R + 256 G + 256² B``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected [H, W, 3], got {list(rgb.shape)}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids to COCO panoptic colours, the inverse of :func:`rgb_to_id`."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(
        np.uint8
    )
