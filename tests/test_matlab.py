"""data_scripts.matlab: the minimal MATLAB v5 reader, on files written by an
independent writer (tests/matwriter.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import matwriter

from data_scripts.matlab import loadmat


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("compress", [True, False])
def test_sbd_gtcls(tmp_path, order, compress):
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 21, size=(7, 5)).astype(np.uint8)  # odd sizes: padding
    matwriter.write_gtcls(tmp_path / "a.mat", seg, order, compress)
    gt = loadmat(tmp_path / "a.mat")["GTcls"]
    assert gt["Segmentation"].dtype == np.uint8
    np.testing.assert_array_equal(gt["Segmentation"], seg)  # column-major order
    assert gt["Boundaries"] == [None]  # sparse arrays are skipped
    present = np.unique(seg[seg > 0]).astype(np.float64)[:, None]
    np.testing.assert_array_equal(gt["CategoriesPresent"], present)


def test_numeric_classes_and_small_elements(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    b = np.array([[3.5]])
    c = np.array([[7]], dtype=np.uint16)  # 2 bytes of data: a small element
    matwriter.write_mat(tmp_path / "b.mat", [
        matwriter.numeric("a", a), matwriter.numeric("b", b),
        matwriter.numeric("c", c)], compress=False)
    out = loadmat(tmp_path / "b.mat")
    np.testing.assert_array_equal(out["a"], a)
    assert out["b"].dtype == np.float64 and out["b"][0, 0] == 3.5
    assert out["c"].dtype == np.uint16 and out["c"][0, 0] == 7


def test_not_a_mat_file(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"\0" * 200)
    with pytest.raises(ValueError, match="not a MATLAB v5"):
        loadmat(tmp_path / "x.mat")


def test_files_written_by_scipy_when_installed(tmp_path):
    """SciPy's writer, as an outside reference (not a dependency: skipped here)."""
    sio = pytest.importorskip("scipy.io")
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(1)
    seg = rng.integers(0, 21, size=(37, 29)).astype(np.uint8)
    bounds = np.empty((20, 1), dtype=object)
    for k in range(20):
        bounds[k, 0] = sparse.csc_matrix(rng.random((37, 29)) < 0.05)
    for compress in (True, False):
        sio.savemat(tmp_path / "a.mat", {"GTcls": {
            "Boundaries": bounds, "Segmentation": seg,
            "CategoriesPresent": np.array([[3.0], [7.0]])}}, do_compression=compress)
        gt = loadmat(tmp_path / "a.mat")["GTcls"]
        np.testing.assert_array_equal(gt["Segmentation"], seg)
        assert gt["Boundaries"] == [None] * 20
