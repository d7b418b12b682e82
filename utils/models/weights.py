"""One loader for every torchvision-format weight file the course uses.

``load_torchvision(model, weights)`` copies a state dict saved by torchvision
(a file read with ``torch.load(..., weights_only=True)``, or the dict itself)
into a course model. ``python -m data_scripts.weights --root data/weights``
downloads the files and checks their hashes:

===========================================  =======================================
file                                         course model
===========================================  =======================================
``vgg16-397923af.pth``                       :class:`VGG16`, FCN (chapter 03)
``vgg16_bn-6c64b313.pth``                    ``VGG16(batch_norm=True)``, SegNet (05)
``resnet50-0676ba61.pth``                    ``resnet50(output_stride=32, 16, 8)``
``resnet101-63fe2227.pth``                   ``resnet101(output_stride=32, 16, 8)``
``deeplabv3_resnet50_coco-cd0a2569.pth``     DeepLabV3+ (chapter 07 adds its map)
``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``  Mask R-CNN (chapter 08 adds its map)
===========================================  =======================================

The protocol
------------
A model that can load torchvision's weights has a method

``torchvision_keys() -> dict[str, str]``
    ``{key in torchvision's file: key in model.state_dict()}`` for every tensor
    the model takes from the file, in the network's order (the order in which
    missing keys are reported). Batch-norm buffers are listed
    (``running_mean``, ``running_var``), ``num_batches_tracked`` is not.

and may have

``torchvision_ignored() -> tuple[str, ...]``
    prefixes of the file's keys that the model does not use, such as the
    ImageNet classifier (``"fc."``, ``"classifier.6."``) or DeepLabV3's
    ``"aux_classifier."``.

Where the course can use torchvision's own names (ResNet), the map is the
identity; where the paper's names differ (VGG16's ``conv3_2`` is torchvision's
``features.12``), it says which is which. A model that holds a backbone
delegates to it, adding the attribute's name to the backbone's keys, as FCN
does with torchvision's ``vgg16`` file::

    def torchvision_keys(self):
        return {tv: f"backbone.{ours}"
                for tv, ours in self.backbone.torchvision_keys().items()}

A file that nests the backbone itself is read by a map that adds the file's
prefix too, and names the heads it uses; the chapters that add these files
write such a map, and nothing in the loader changes:

- ``deeplabv3_resnet50_coco`` (chapter 07): ``backbone.<resnet50 key>`` (no
  ``fc``; output stride 8), ``classifier.0.convs.0.0.weight``, ... (ASPP and
  head), ``aux_classifier.*`` (ignore it);
- ``maskrcnn_resnet50_fpn_coco`` (chapter 08): ``backbone.body.<resnet50
  key>`` (frozen batch norms), ``backbone.fpn.*``, ``rpn.*``, ``roi_heads.*``.
  torchvision renamed the FPN's and the RPN head's convolutions after this
  file was published (``fpn.inner_blocks.0.weight`` to
  ``fpn.inner_blocks.0.0.weight``, ``rpn.head.conv.weight`` to
  ``rpn.head.conv.0.0.weight``) and renames old keys while loading; the map
  names the keys the file holds (check them on the file itself).

The loader then copies, all or nothing: every key of the map must be in the
file, hold a tensor of the model's shape and (for floating-point tensors) a
floating-point dtype; every key of the file must be in the map, under an
ignored prefix, or the ``num_batches_tracked`` of a mapped batch norm. One
exception is the rule of convolutionalisation: a fully connected weight
``[out, in]`` is read into a convolution ``[out, C, kh, kw]`` with
``in = C * kh * kw``, in ``torch.flatten``'s order (channel, row, column), as
VGG16's fc6 and fc7 are. Otherwise one ``ValueError`` lists every missing key
(in the network's order), every unexpected key, every wrong shape (with
torchvision's key and both shapes) and every value that is not a tensor, and
the model is left untouched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

_NUM_BATCHES = "num_batches_tracked"


def load_torchvision(model: nn.Module, weights) -> None:
    """Copy torchvision-format ``weights`` into ``model``, all or nothing.

    ``model`` has ``torchvision_keys()`` (and optionally
    ``torchvision_ignored()``; see the module's docstring). ``weights`` is a
    path to a file saved with ``torch.save`` (read without executing code) or
    a state dict. Raises ``FileNotFoundError`` for a missing file,
    ``ValueError`` for an unreadable one or for weights that do not fit (one
    message listing every problem), ``TypeError`` for a model without the
    protocol.
    """
    if not callable(getattr(model, "torchvision_keys", None)):
        raise TypeError(
            f"{type(model).__name__} has no torchvision_keys(): it cannot load "
            "torchvision-format weights (see utils.models.weights)"
        )
    state = read_state_dict(weights)
    mapping = model.torchvision_keys()
    ignored = tuple(getattr(model, "torchvision_ignored", tuple)())
    ours = model.state_dict()
    wrong_map = [k for k in mapping.values() if k not in ours]
    if wrong_map:  # a bug in the model's map, not in the file
        raise KeyError(f"{type(model).__name__}.torchvision_keys() names keys it "
                       f"does not have: {', '.join(wrong_map)}")

    missing = [k for k in mapping if k not in state]  # in the network's order
    batch_norms = {k[: -len("running_mean")] for k in mapping
                   if k.endswith(".running_mean")}
    unexpected = [
        k for k in state
        if k not in mapping and not k.startswith(ignored)
        and not (k.endswith("." + _NUM_BATCHES)
                 and k[: -len(_NUM_BATCHES)] in batch_norms)
    ]
    problems, converted = [], {}
    for tv_key, our_key in mapping.items():
        if tv_key not in state:
            continue
        value, want = state[tv_key], ours[our_key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{tv_key}: expected a tensor, got {type(value).__name__}")
            continue
        if want.is_floating_point() and not value.is_floating_point():
            problems.append(f"{tv_key}: expected floating point, got {value.dtype}")
            continue
        expected = _torchvision_shape(want.shape, value)
        if value.shape != expected:
            problems.append(f"wrong shape {tv_key}: expected {list(expected)}, "
                            f"got {list(value.shape)}")
            continue
        converted[our_key] = value.reshape(want.shape)
    if missing or unexpected or problems:
        raise ValueError(_report(model, missing, unexpected, problems))
    with torch.no_grad():
        for key, value in converted.items():
            ours[key].copy_(value)


def read_state_dict(weights) -> dict:
    """``weights`` itself if it is a dict, else the state dict in the file at
    that path (``torch.load`` with ``weights_only=True``, on the CPU)."""
    if isinstance(weights, dict):
        return weights
    if not isinstance(weights, (str, Path)):
        raise TypeError(f"weights must be a path or a state dict, got "
                        f"{type(weights).__name__}")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"no weight file at {path}; torchvision's files download with: "
            "python -m data_scripts.weights --root data/weights --only NAME"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(f"{path} is not a readable torch weight file "
                         f"({type(err).__name__}); download it again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _torchvision_shape(ours: torch.Size, value: torch.Tensor) -> torch.Size:
    """The shape torchvision's file should hold for a tensor of shape ``ours``:
    the same, or ``[out, C*kh*kw]`` where a fully connected layer's weight
    (2-d in the file) is read into a convolution (4-d here)."""
    if value.ndim == 2 and len(ours) == 4:
        return torch.Size((ours[0], ours[1:].numel()))
    return ours


def _report(model: nn.Module, missing: list[str], unexpected: list[str],
            problems: list[str]) -> str:
    """One message listing everything that does not fit."""
    header = f"weights do not fit {type(model).__name__} (torchvision's format)"
    # A slim copy (chapter profiles ci and cpu) cannot take ImageNet's weights.
    slim = sorted({m.width for m in model.modules()
                   if isinstance(getattr(m, "width", None), (int, float))
                   and m.width != 1})
    if slim:
        header += f" (width={slim[0]}; ImageNet weights need width=1.0)"
    lines = [header + ":"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)
