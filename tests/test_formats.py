import numpy as np
import pytest
from PIL import Image

from utils.data import formats


def brute_force_rle(mask):
    """Runs of the column-major pixel sequence, starting with a run of 0s."""
    counts, current, run = [], 0, 0
    for value in mask.T.reshape(-1):
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


def test_rle_round_trip_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(1, 10, 2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        counts = formats.rle_encode(mask)["counts"]
        assert counts == brute_force_rle(mask)
        assert np.array_equal(formats.rle_decode(counts, h, w), mask)


def test_rle_decode_is_column_major():
    mask = formats.rle_decode([3, 2, 1], 2, 3)
    assert mask.tolist() == [[0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match="sum to 5"):
        formats.rle_decode([3, 2], 2, 3)


def test_compressed_rle_strings():
    # Hand-worked: small counts are single characters '0' + value; the fourth
    # count is stored as its difference (-99) from the second, in 5-bit groups.
    assert formats.rle_to_string([3, 2, 1]) == "321"
    assert formats.rle_from_string("321") == [3, 2, 1]
    counts = [5, 100, 7, 1, 300000, 2]
    assert formats.rle_from_string(formats.rle_to_string(counts)) == counts
    with pytest.raises(ValueError, match="ends in the middle"):
        formats.rle_from_string("\x50")  # continuation bit set, nothing follows


def test_voc_palette_known_colours():
    pal = formats.voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[1].tolist() == [128, 0, 0] and pal[15].tolist() == [192, 128, 128]
    assert pal[255].tolist() == [224, 224, 192]


def test_palette_png_round_trip(tmp_path):
    label = np.array([[0, 1, 255], [12, 15, 3]])
    formats.write_palette_png(tmp_path / "l.png", label)
    with Image.open(tmp_path / "l.png") as img:
        assert img.mode == "P"
    assert np.array_equal(formats.read_label_png(tmp_path / "l.png"), label)
    Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode RGB"):
        formats.read_label_png(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError):
        formats.read_label_png(tmp_path / "missing.png")


def test_colorize_checks_range():
    pal = formats.voc_palette(21)
    with pytest.raises(ValueError, match=r"\[0, 21\)"):
        formats.colorize(np.array([[0, 255]]), pal)
    with pytest.raises(ValueError, match="integer"):
        formats.colorize(np.zeros((2, 2), np.float32), pal)


def test_cityscapes_train_ids():
    ids = np.arange(34)
    train = formats.cityscapes_to_train_ids(ids)
    assert train[7] == 0 and train[33] == 18 and train[0] == 255 and train[30] == 255
    assert sorted(set(train.tolist()) - {255}) == list(range(19))
    with pytest.raises(ValueError, match="integers"):
        formats.cityscapes_to_train_ids(np.zeros(3, np.float32))


def test_polygon_to_mask_square_and_union():
    mask = formats.polygon_to_mask([[1, 1, 4, 1, 4, 3, 1, 3]], 5, 6)
    expected = np.zeros((5, 6), np.uint8)
    expected[1:3, 1:4] = 1  # pixel centres (x + .5, y + .5) inside [1, 4] x [1, 3]
    assert np.array_equal(mask, expected)
    two = formats.polygon_to_mask(
        [[0, 0, 2, 0, 2, 2, 0, 2], [3, 3, 5, 3, 5, 5, 3, 5]], 5, 5
    )
    assert two.sum() == 8
    with pytest.raises(ValueError, match="at least 3 points"):
        formats.polygon_to_mask([[0, 0, 1, 1]], 3, 3)


def test_panoptic_rgb_ids_round_trip():
    ids = np.array([[0, 1, 256, 65536 + 3, 2**24 - 1]])
    assert np.array_equal(formats.rgb_to_id(formats.id_to_rgb(ids)), ids)
    assert formats.id_to_rgb(np.array([258]))[0].tolist() == [2, 1, 0]
