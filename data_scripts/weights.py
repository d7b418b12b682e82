"""Pretrained weights in torchvision's file format, checked by hash.

    python -m data_scripts.weights --root data/weights [--only NAME ...]

Downloads from download.pytorch.org, as torchvision publishes them:

- ``vgg16`` (528 MB): ImageNet VGG16, ``vgg16-397923af.pth``: FCN (chapter 03);
- ``vgg16_bn`` (528 MB): ImageNet VGG16 with batch norm,
  ``vgg16_bn-6c64b313.pth``: SegNet's encoder (chapter 05);
- ``resnet50`` (98 MB) and ``resnet101`` (171 MB): ImageNet ResNets,
  ``resnet50-0676ba61.pth``, ``resnet101-63fe2227.pth``: DeepLabV3+
  (chapter 07) and Mask R-CNN's backbone (chapter 08);
- ``deeplabv3_resnet50_coco`` (161 MB): DeepLabV3 ResNet-50 trained on COCO's
  images with VOC's 20 classes, ``deeplabv3_resnet50_coco-cd0a2569.pth``
  (chapter 07);
- ``maskrcnn_resnet50_fpn_coco`` (170 MB): COCO Mask R-CNN R50-FPN,
  ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` (chapter 08).

Each file's name carries the first hex digits of its SHA-256, which are
checked after the download, as ``torch.hub`` does. The course's models load
them with :func:`utils.models.load_torchvision` (``model.load_pretrained(path)``
and ``python -m utils.train --pretrained PATH`` where a model offers it).
"""

from __future__ import annotations

import sys

from data_scripts import common

WEIGHTS = ("vgg16", "vgg16_bn", "resnet50", "resnet101", "deeplabv3_resnet50_coco",
           "maskrcnn_resnet50_fpn_coco")


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
