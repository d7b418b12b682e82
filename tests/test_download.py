"""data_scripts.download against a local HTTP server (no internet)."""

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from localhost_server import serve

from data_scripts.download import (
    ChecksumError,
    DownloadError,
    apply_mirror,
    download,
)
from data_scripts.sources import SOURCES, Checksum

DATA = bytes(range(256)) * 4000  # ~1 MB, several read chunks
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with serve() as (base, state):
        state.add("/files/data.bin", DATA)
        yield base, state


def fetch(url, dest, **kw):
    return download(url, dest, progress=False, retry_wait=0.0, **kw)


def test_download_verifies_and_moves_into_place(server, tmp_path):
    base, _state = server
    dest = fetch(f"{base}/files/data.bin", tmp_path / "sub" / "data.bin", sha256=SHA)
    assert dest.read_bytes() == DATA
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]


def test_existing_file_with_right_hash_is_not_downloaded_again(server, tmp_path):
    base, state = server
    dest = tmp_path / "data.bin"
    fetch(f"{base}/files/data.bin", dest, sha256=SHA)
    n = len(state.requests)
    fetch(f"{base}/files/data.bin", dest, sha256=SHA)
    assert len(state.requests) == n


def test_existing_file_with_wrong_hash_is_replaced(server, tmp_path):
    base, state = server
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    fetch(f"{base}/files/data.bin", dest, sha256=SHA)
    assert dest.read_bytes() == DATA and len(state.requests) == 1


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    base, state = server
    state.drops["/files/data.bin"] = 1
    dest = fetch(f"{base}/files/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert dest.read_bytes() == DATA
    ranges = [r for _, r in state.requests]
    assert ranges == [None, f"bytes={len(DATA) // 2}-"]


def test_interrupted_run_is_resumed_by_the_next_run(server, tmp_path):
    base, state = server
    state.drops["/files/data.bin"] = 1
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="run the same command again"):
        fetch(f"{base}/files/data.bin", dest, sha256=SHA, retries=0)
    part = tmp_path / "data.bin.part"
    assert not dest.exists() and part.stat().st_size == len(DATA) // 2
    fetch(f"{base}/files/data.bin", dest, sha256=SHA)
    assert dest.read_bytes() == DATA and not part.exists()
    assert state.requests[-1][1] == f"bytes={len(DATA) // 2}-"


def test_server_without_range_support_restarts(server, tmp_path):
    base, state = server
    state.ranges = False
    state.drops["/files/data.bin"] = 1
    dest = fetch(f"{base}/files/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert dest.read_bytes() == DATA


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(server, tmp_path):
    base, _state = server
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        fetch(f"{base}/files/data.bin", tmp_path / "data.bin", sha256=wrong)
    assert wrong in str(err.value) and SHA in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_checksum_is_checked_after_a_resumed_download(server, tmp_path):
    base, state = server
    state.drops["/files/data.bin"] = 1
    with pytest.raises(ChecksumError):
        fetch(f"{base}/files/data.bin", tmp_path / "d.bin", sha256="1" * 64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("algorithm", ["md5", "sha256-prefix"])
def test_other_published_checksums(server, tmp_path, algorithm):
    base, _state = server
    digest = hashlib.new("md5" if algorithm == "md5" else "sha256", DATA).hexdigest()
    value = digest if algorithm == "md5" else digest[:8]
    fetch(f"{base}/files/data.bin", tmp_path / "a", checksum=Checksum(algorithm, value))
    bad = Checksum(algorithm, ("0" if value[0] != "0" else "1") + value[1:])
    with pytest.raises(ChecksumError, match=value[1:]):
        fetch(f"{base}/files/data.bin", tmp_path / "b", checksum=bad)
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.part").exists()


def test_missing_file_is_a_clear_error(server, tmp_path):
    base, _state = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{base}/nope.bin", tmp_path / "nope.bin")
    assert list(tmp_path.iterdir()) == []


def test_mirror_replaces_the_host(server, tmp_path):
    base, _state = server
    url = "http://host.robots.ox.ac.uk/files/data.bin?x=1"
    assert apply_mirror(url, "https://m.example/pub/") == (
        "https://m.example/pub/files/data.bin?x=1"
    )
    assert apply_mirror(url, None) == url
    with pytest.raises(ValueError, match="--mirror"):
        apply_mirror(url, "m.example")
    dest = fetch(apply_mirror("https://far.away/files/data.bin", base),
                 tmp_path / "data.bin", sha256=SHA)
    assert dest.read_bytes() == DATA


def test_sources_table_is_well_formed():
    for key, source in SOURCES.items():
        assert source.url.startswith(("http://", "https://")), key
        if source.checksum and source.checksum.algorithm == "sha256-prefix":
            # torchvision puts the prefix in the file name
            assert source.checksum.value in source.filename, key


def test_complete_part_file_is_finished_and_a_stale_one_restarted(server, tmp_path):
    import json

    base, state = server
    url = f"{base}/files/data.bin"
    etag, _ = state.validators_of("/files/data.bin")

    def part(name, data, total):
        (tmp_path / f"{name}.part").write_bytes(data)
        (tmp_path / f"{name}.part.json").write_text(json.dumps(
            {"url": url, "total": total, "etag": etag, "last_modified": None}))

    part("a.bin", DATA, len(DATA))  # complete: the server says 416
    fetch(url, tmp_path / "a.bin", sha256=SHA)
    assert (tmp_path / "a.bin").read_bytes() == DATA
    assert state.requests == [("/files/data.bin", f"bytes={len(DATA)}-")]
    assert state.if_ranges == [etag]
    part("b.bin", DATA + b"extra", len(DATA) + 5)  # longer than the file
    fetch(url, tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == DATA
    # a part with nothing recorded about its version is not resumed
    (tmp_path / "c.bin.part").write_bytes(DATA[:1000])
    fetch(url, tmp_path / "c.bin")
    assert (tmp_path / "c.bin").read_bytes() == DATA
    assert state.requests[-1] == ("/files/data.bin", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.bin"]
