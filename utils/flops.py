"""Counting the floating-point operations of a forward pass (chapter 02).

:func:`count_flops` runs the model once with forward hooks on its
convolutions and linear layers and adds up their multiply-accumulates. Later
chapters use it to compare models' costs.
"""

from __future__ import annotations

import torch
from torch import nn


def layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a Conv2d, ConvTranspose2d or Linear.

    - ``Conv2d``: every output value is a dot product of length
      ``C_in / groups * kh * kw``;
    - ``ConvTranspose2d``: every input value is multiplied into
      ``C_out / groups * kh * kw`` outputs;
    - ``Linear``: every output value is a dot product of length ``in_features``.
    """
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        per_input = (module.out_channels // module.groups) * kh * kw
        return inputs[0].numel() * per_input
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    raise TypeError(f"no MAC rule for {type(module).__name__}")


@torch.no_grad()
def count_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of ``model(*inputs)``: 2 x the multiply-accumulates of its
    ``Conv2d``, ``ConvTranspose2d`` and ``Linear`` layers (a multiply and an add
    each). Biases, activations and pooling are not counted: they cost one
    operation per output value, a small fraction of the rest.

    Only modules are seen: work done by ``torch.nn.functional`` calls inside
    ``forward`` is not counted.
    """
    total = 0

    def hook(module, args, output):
        nonlocal total
        total += layer_macs(module, args, output)

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, kinds)]
    try:
        model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return 2 * total
