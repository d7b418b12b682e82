"""Downloads without a published checksum, against servers that misbehave.

A server on 127.0.0.1 (tests/localhost_server.py) sends truncated bodies
without a ``Content-Length``, answers a resumed download with another
version of the file, announces more than the disk holds; the tests show what
the scripts accept (only what they can verify), and that a later run notices
files that changed after they were accepted.
"""

import io
import json
import sys
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from localhost_server import serve
from test_dataset_scripts import publish, run_script

from data_scripts import disk, sources
from data_scripts.download import DownloadError, download

PATH = "/files/data.bin"


@pytest.fixture
def server():
    with serve() as (base, state):
        yield base, state


def fetch(url, dest, **kw):
    return download(url, dest, progress=False, retry_wait=0.0, **kw)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------ resumes across versions

OLD = bytes(range(256)) * 1200  # 307,200 bytes
SAME_LENGTH = bytes(reversed(OLD))
LONGER = SAME_LENGTH + b"more"


@pytest.mark.parametrize("server_kind, new", [
    ("honours If-Range", LONGER),
    ("ignores If-Range, other length", LONGER),
    ("ignores If-Range, same length", SAME_LENGTH),
    ("sends no validators", SAME_LENGTH),
])
def test_a_resumed_download_is_never_spliced_from_two_versions(server, tmp_path,
                                                               server_kind, new):
    base, state = server
    state.if_range = server_kind == "honours If-Range"
    state.validators = server_kind != "sends no validators"
    state.add(PATH, OLD)
    state.drops[PATH] = 1
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="partial file"):
        fetch(base + PATH, dest, retries=0)
    half = (tmp_path / "data.bin.part").stat().st_size
    assert half == len(OLD) // 2
    state.add(PATH, new)  # the file changed on the server meanwhile
    fetch(base + PATH, dest)
    assert dest.read_bytes() == new  # not OLD[:half] + new[half:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_an_unchanged_file_is_resumed_with_if_range(server, tmp_path):
    base, state = server
    state.add(PATH, OLD)
    state.drops[PATH] = 1
    fetch(base + PATH, tmp_path / "data.bin")
    assert (tmp_path / "data.bin").read_bytes() == OLD
    etag, _ = state.validators_of(PATH)
    assert state.requests[1] == (PATH, f"bytes={len(OLD) // 2}-")
    assert state.if_ranges == [None, etag]


def test_a_file_announced_larger_than_the_free_space_is_not_started(server,
                                                                    tmp_path,
                                                                    monkeypatch):
    base, state = server
    state.add(PATH, OLD)
    monkeypatch.setattr(disk, "free_bytes", lambda path: disk.RESERVE + 1000)
    with pytest.raises(disk.DiskFullError, match="needs 307.2 KB"):
        fetch(base + PATH, tmp_path / "data.bin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("length", [True, False])
def test_a_file_beyond_its_size_bound_is_refused(server, tmp_path, length):
    base, state = server
    state.content_length = length
    state.add(PATH, OLD)
    with pytest.raises(DownloadError, match="more than the 100.0 KB"):
        fetch(base + PATH, tmp_path / "data.bin", max_bytes=100_000)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------ COCO --subset

W, H = 64, 48


def jpeg(seed=0, size=(W, H)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def coco_server(monkeypatch, state, file_name="000000000001.jpg", image=None):
    """One annotated val image; serves the annotations zip and the image."""
    data = {"images": [{"id": 1, "file_name": file_name, "width": W, "height": H}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "iscrowd": 0, "segmentation": [[1, 1, 9, 1, 9, 9]]}],
            "categories": [{"id": 1, "name": "person"}]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("annotations/instances_val2017.json", json.dumps(data))
    publish(monkeypatch, state, {"coco_annotations": buf.getvalue()})
    # no checksum is published for COCO: the table says so
    monkeypatch.setitem(sources.SOURCES, "coco_annotations", sources.Source(
        sources.SOURCES["coco_annotations"].url, None, "241 MB"))
    image = jpeg() if image is None else image
    state.add("/val2017/" + urllib.parse.quote(file_name), image)
    return image


def subset(root, base, capsys):
    code, out = run_script("coco", root, base, "--subset", "1", "--splits", "val")
    return code, out, capsys.readouterr().err


def test_a_truncated_jpeg_without_content_length_is_refused(server, monkeypatch,
                                                            tmp_path, capsys):
    base, state = server
    image = coco_server(monkeypatch, state)
    state.content_length = False  # the body ends when the connection closes
    state.drops["/val2017/000000000001.jpg"] = 1
    state.drop_at = 0.6
    root = tmp_path / "coco"
    code, out, err = subset(root, base, capsys)
    line = one_error_line(err)
    assert code == 1 and "is not what was expected" in line and "truncated" in line
    folder = root / "val2017_subset"
    assert list(folder.iterdir()) == [] and not (root / "prepared.json").exists()
    # the next run downloads it afresh (the server behaves now)
    code, out, err = subset(root, base, capsys)
    assert code == 0 and "nothing to do" not in out, err
    assert (folder / "000000000001.jpg").read_bytes() == image


def test_an_image_of_another_size_than_annotated_is_refused(server, monkeypatch,
                                                             tmp_path, capsys):
    base, state = server
    coco_server(monkeypatch, state, image=jpeg(size=(W, H + 1)))
    code, _, err = subset(tmp_path / "coco", base, capsys)
    assert code == 1 and "64 x 49 pixels, the annotations say 64 x 48" in \
        one_error_line(err)


def test_a_file_name_that_is_a_path_is_refused(server, monkeypatch, tmp_path,
                                               capsys):
    base, state = server
    coco_server(monkeypatch, state, file_name="../../evil.jpg")
    root = tmp_path / "coco"
    code, _, err = subset(root, base, capsys)
    assert code == 1 and "plain file_name" in one_error_line(err)
    assert not (tmp_path / "evil.jpg").exists()
    assert not [p for p, _ in state.requests if p.endswith(".jpg")]


@pytest.fixture
def prepared(server, monkeypatch, tmp_path, capsys):
    """A ``--subset 1`` COCO root, prepared: (root, base, image, path)."""
    base, state = server
    image = coco_server(monkeypatch, state)
    root = tmp_path / "coco"
    assert subset(root, base, capsys)[0] == 0
    return root, base, image, root / "val2017_subset" / "000000000001.jpg"


def test_a_later_run_notices_a_changed_image_and_downloads_it_again(prepared,
                                                                    capsys):
    root, base, image, path = prepared
    sums = (root / "prepared.sha256").read_text()
    assert "  val2017_subset/000000000001.jpg\n" in sums
    damaged = bytearray(image)
    damaged[len(damaged) // 2] ^= 0x10  # same size, one bit
    path.write_bytes(bytes(damaged))
    code, out, err = subset(root, base, capsys)
    assert code == 0, err
    assert "1 prepared file changed" in out and "downloading again" in out
    assert path.read_bytes() == image
    code, out, err = subset(root, base, capsys)
    assert code == 0 and "nothing to do" in out


def test_a_truncated_image_accepted_by_an_older_version_is_replaced(prepared,
                                                                    capsys):
    root, base, image, path = prepared
    # what the older scripts left: a truncated JPEG and no checksums
    path.write_bytes(image[: len(image) * 6 // 10])
    (root / "prepared.sha256").unlink()
    manifest = json.loads((root / "prepared.json").read_text())
    del manifest["checksums"]
    (root / "prepared.json").write_text(json.dumps(manifest))
    code, out, err = subset(root, base, capsys)
    assert code == 0, err
    assert "preparing again" in out and "000000000001.jpg is damaged" in out
    assert path.read_bytes() == image
