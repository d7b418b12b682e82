"""Pretrained weights in torchvision's file format, checked by hash.

    python -m data_scripts.weights --root data/weights [--only NAME ...]

Downloads ImageNet VGG16 (528 MB), ResNet-50 (98 MB) and ResNet-101 (171 MB),
and COCO Mask R-CNN R50-FPN (170 MB), from download.pytorch.org. Each file's
name carries the first hex digits of its SHA-256 (``vgg16-397923af.pth``),
which are checked after the download, as ``torch.hub`` does. The course's
models load them with ``load_pretrained(path)`` (``--pretrained PATH``).
"""

from __future__ import annotations

import sys

from data_scripts import common

WEIGHTS = ("vgg16", "resnet50", "resnet101", "maskrcnn_resnet50_fpn_coco")


def parameters(path) -> int:
    """Number of parameters in a state-dict file (loaded without pickled code)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path} holds a {type(state).__name__}, not a state dict")
    return sum(v.numel() for v in state.values() if hasattr(v, "numel"))


def main(argv=None):
    p = common.parser("weights", __doc__)
    p.add_argument("--only", nargs="+", choices=WEIGHTS, default=list(WEIGHTS),
                   help="download only these (default: all)")
    args = p.parse_args(argv)
    options = {"only": sorted(args.only)}
    if common.already_prepared(args, **options):
        return
    args.root.mkdir(parents=True, exist_ok=True)
    files, counts = {}, {}
    for name in args.only:
        path = common.fetch(name, args, folder=args.root)
        files[name] = path.name
        counts[name] = parameters(path)
    common.finish(args, {
        "dataset": "weights", "options": options, "files": files,
        "class_counts_of": "parameters in each file", "class_counts": counts,
    })


if __name__ == "__main__":
    sys.exit(common.run(main))
