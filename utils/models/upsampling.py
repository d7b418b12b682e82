"""Bilinear upsampling as a transposed convolution (chapter 03).

FCN initialises its upsampling layers with the bilinear interpolation kernel,
so that before any training a ``ConvTranspose2d`` with kernel ``2f``, stride
``f`` and padding ``f/2`` upsamples by ``f`` exactly as bilinear interpolation
does (``F.interpolate(..., align_corners=False)``) away from the border. Later
chapters reuse these helpers.
"""

from __future__ import annotations

import torch
from torch import nn


def bilinear_kernel(kernel_size: int) -> torch.Tensor:
    """The ``[k, k]`` bilinear interpolation kernel (FCN's ``upsample_filt``).

    It is the outer product of a 1-D "tent" ``1 - |i - c| / f`` with factor
    ``f = ceil(k / 2)`` and centre ``c = (k - 1) / 2``, so that a transposed
    convolution with stride ``f`` spreads each input value over its
    neighbourhood with linearly falling weights.
    """
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive int, got {kernel_size!r}")
    factor = (kernel_size + 1) // 2
    centre = (kernel_size - 1) / 2
    i = torch.arange(kernel_size, dtype=torch.float32)
    tent = 1 - (i - centre).abs() / factor  # (k,)
    return tent[:, None] * tent[None, :]  # (k, k)


def bilinear_weight(channels: int, kernel_size: int) -> torch.Tensor:
    """``[C, C, k, k]`` weight of a ``ConvTranspose2d(C, C, k)`` that upsamples
    each channel on its own: the bilinear kernel on the diagonal, zeros off it."""
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = bilinear_kernel(kernel_size)
    return weight


def bilinear_upsampling(channels: int, factor: int, trainable: bool = True
                        ) -> nn.ConvTranspose2d:
    """``ConvTranspose2d`` that upsamples ``[B, C, h, w]`` to exactly
    ``[B, C, factor*h, factor*w]``, initialised to bilinear interpolation.

    Kernel ``2*factor``, stride ``factor``, padding ``factor/2`` (``factor``
    must be even): the output size is ``(h - 1) f - f + 2 f = f h``, and input
    cell ``i`` lands on output coordinate ``f i + (f - 1) / 2``, the centre of
    the ``f`` pixels it covers. With ``trainable=False`` the weight stays fixed,
    as for FCN's final upsampling layer.
    """
    if not isinstance(factor, int) or factor < 2 or factor % 2:
        raise ValueError(f"factor must be an even int >= 2, got {factor!r}")
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor,
                               padding=factor // 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_weight(channels, 2 * factor))
    layer.weight.requires_grad_(trainable)
    return layer
