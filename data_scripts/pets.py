"""Oxford-IIIT Pet with trimaps: pet, background, and the boundary as ignore.

    python -m data_scripts.pets --root data/pets [--mirror URL]

Downloads images.tar.gz (755 MB) and annotations.tar.gz (18 MB), checks their
MD5s and extracts them to ``images/`` and ``annotations/``. Read the result
with :class:`utils.data.pets.OxfordPets` or ``--data pets``: trainval (3,680
images) for training, test (3,669) for validation.
"""

from __future__ import annotations

import sys

from data_scripts import common
from utils.data import pets


def main(argv=None):
    args = common.parser("pets", __doc__).parse_args(argv)
    if common.already_prepared(args):
        return
    root = common.make_root(args)
    common.extract_part(args, "pets_images", "images", root / "images")
    common.extract_part(args, "pets_annotations", "annotations",
                        root / "annotations")
    splits = {s: len(pets.OxfordPets(root, s)) for s in pets.SPLITS}
    train = pets.OxfordPets(root, "trainval")
    missing = [p for pair in train.pairs for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} files of the trainval list are "
                                f"missing, e.g. {missing[0]}")
    counts = common.class_counts([t for _, t in train.pairs], pets.TRIMAP_LUT,
                                 pets.NUM_CLASSES)
    common.finish(args, {
        "dataset": "pets", "options": {}, "splits": splits,
        "class_counts_of": "trainval images containing each class",
        "class_counts": dict(zip(pets.CLASSES, counts)),
    })


if __name__ == "__main__":
    sys.exit(common.run(main))
