"""ImageNet VGG16 weights from a file in torchvision's format (chapter 03).

torchvision's ``vgg16`` keeps its thirteen convolutions in ``features.N`` (N =
0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; the other indices are ReLUs and
max-pools) and its fully connected layers in ``classifier.0`` (fc6, ``[4096,
25088]``), ``classifier.3`` (fc7, ``[4096, 4096]``) and ``classifier.6`` (the
1000 ImageNet classes, not needed for segmentation).
:func:`load_vgg16_torchvision` copies them into
:class:`~utils.models.backbones.vgg.VGG16`, reshaping fc6 into a 7x7
convolution and fc7 into a 1x1 convolution, as the FCN paper does. ``python -m
data_scripts.weights --root data/weights --only vgg16`` downloads the file
(``vgg16-397923af.pth``) and checks its hash.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from utils.models.backbones.vgg import STAGE_DEPTHS, VGG16


def torchvision_key_map() -> dict[str, str]:
    """torchvision ``vgg16`` parameter names -> the course's VGG16 names
    (weights and biases of the 13 convolutions, fc6 and fc7)."""
    names = {}
    index = 0  # position in torchvision's ``features`` Sequential
    for stage, depth in enumerate(STAGE_DEPTHS, start=1):
        for k in range(1, depth + 1):
            names[index] = f"conv{stage}.conv{stage}_{k}"
            index += 2  # a conv, then its ReLU
        index += 1  # the stage's max-pool
    mapping = {}
    for i, name in names.items():
        for p in ("weight", "bias"):
            mapping[f"features.{i}.{p}"] = f"{name}.{p}"
    for tv, ours in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
        for p in ("weight", "bias"):
            mapping[f"{tv}.{p}"] = f"{ours}.{p}"
    return mapping


# The ImageNet classifier and the dropout layers' (absent) entries are allowed
# and ignored; any other key means the file is not torchvision's vgg16.
_IGNORED_PREFIXES = ("classifier.6.",)


def load_vgg16_torchvision(model: nn.Module, weights) -> None:
    """Copy torchvision-format VGG16 weights into ``model``'s VGG16.

    ``model`` is a :class:`VGG16` or has one as ``model.backbone``; it must be
    full width (``width=1.0``). ``weights`` is a path to a file saved with
    ``torch.save`` or a state dict. Missing keys, unexpected keys and wrong
    shapes raise one ``ValueError`` that lists them all; nothing is copied
    unless everything matches.
    """
    backbone = model if isinstance(model, VGG16) else getattr(model, "backbone", None)
    if not isinstance(backbone, VGG16):
        raise TypeError(
            f"expected a VGG16 or a model with a VGG16 .backbone, got "
            f"{type(model).__name__}"
        )
    if isinstance(weights, (str, Path)):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"no weight file at {path}; download torchvision's ImageNet VGG16 "
                "with: python -m data_scripts.weights --root data/weights --only vgg16"
            )
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a damaged file
            raise ValueError(
                f"{path} is not a readable torch weight file "
                f"({type(err).__name__}); download it again"
            ) from None
    if not isinstance(weights, dict):
        raise TypeError(f"weights must be a path or a state dict, got {type(weights)}")

    mapping = torchvision_key_map()
    ours = backbone.state_dict()
    missing = [k for k in mapping if k not in weights]  # in the network's order
    unexpected = sorted(k for k in weights if k not in mapping
                        and not k.startswith(_IGNORED_PREFIXES))
    wrong_shape = []
    converted = {}
    for tv_key, our_key in mapping.items():
        if tv_key not in weights:
            continue
        value = weights[tv_key]
        want = ours[our_key].shape
        if not isinstance(value, torch.Tensor):
            wrong_shape.append(f"{tv_key}: expected a tensor, got "
                               f"{type(value).__name__}")
            continue
        # fc6/fc7 hold Linear weights: [out, in] -> [out, C, k, k] with
        # in = C*k*k in the order torch.flatten gives (channel, row, column).
        if value.ndim == 2 and len(want) == 4 and value.numel() == want.numel() \
                and value.shape[0] == want[0]:
            value = value.reshape(want)
        if value.shape != want:
            wrong_shape.append(
                f"{tv_key}: expected {list(_torchvision_shape(tv_key, want))}, "
                f"got {list(weights[tv_key].shape)}"
            )
        converted[our_key] = value
    if missing or unexpected or wrong_shape:
        header = "weights are not torchvision's vgg16 for this backbone"
        if backbone.width != 1.0:
            header += f" (width={backbone.width}; ImageNet weights need width=1.0)"
        header += ":"
        lines = [header]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): "
                         f"{', '.join(unexpected)}")
        for line in wrong_shape:
            lines.append(f"  wrong shape {line}")
        raise ValueError("\n".join(lines))
    with torch.no_grad():
        for key, value in converted.items():
            ours[key].copy_(value.to(ours[key].dtype))


def _torchvision_shape(key: str, ours: torch.Size) -> tuple[int, ...]:
    """The shape torchvision stores for a parameter our VGG16 holds as ``ours``."""
    if key.startswith("classifier.") and key.endswith("weight"):
        return (ours[0], ours[1:].numel())
    return tuple(ours)
