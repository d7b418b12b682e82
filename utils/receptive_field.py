"""Receptive fields: computed, measured by gradients, and effective (chapter 06).

The *receptive field* of an output unit is the set of input pixels that can
change it. For a chain of layers with kernel ``k``, stride ``s`` and dilation
``d`` it is a square whose side follows one recurrence: a layer adds
``(k - 1) d`` input steps of the current *jump* (the input distance between
neighbouring units, the product of the strides so far)::

    r_0 = 1, j_0 = 1;   r_l = r_{l-1} + (k_l - 1) d_l j_{l-1},   j_l = j_{l-1} s_l

(:func:`receptive_field`). Chapter 06 checks the recurrence against the
*theoretical* receptive field measured by back-propagation
(:func:`gradient_extent`: every weight made positive, so no path cancels or
dies and the gradient is non-zero exactly where some path reaches), and
contrasts both with the *effective* receptive field of Luo et al. (NeurIPS
2016), the mean gradient magnitude over random inputs
(:func:`effective_receptive_field`), which concentrates in a small central
part of the theoretical one (:func:`mass_side`).

:func:`zero_stuffed_kernel` writes a dilated kernel as an ordinary one, and
:func:`tap_counts` counts the paths from each input offset through a stack of
dilated convolutions: where it is zero, the stack never looks (gridding).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def receptive_field(layers) -> int:
    """Side of the receptive field of one output unit of a chain of layers.

    ``layers`` is a sequence of ``(kernel_size, stride, dilation)`` tuples of
    positive ints, first layer first (a pooling layer is a layer with its
    kernel and stride and dilation 1). Returns the side ``r`` in input pixels;
    an empty chain gives 1.
    """
    size, jump = 1, 1
    for index, layer in enumerate(layers):
        k, s, d = _geometry(layer, index)
        size += (k - 1) * d * jump  # k - 1 gaps of d units, each `jump` pixels
        jump *= s
    return size


def _geometry(layer, index: int) -> tuple[int, int, int]:
    try:
        k, s, d = layer
    except (TypeError, ValueError):
        raise ValueError(f"layer {index} must be (kernel_size, stride, dilation), "
                         f"got {layer!r}") from None
    for name, value in (("kernel_size", k), ("stride", s), ("dilation", d)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"layer {index}: {name} must be a positive int, "
                             f"got {value!r}")
    return k, s, d


def layer_geometry(module: nn.Module) -> list[tuple[int, int, int]]:
    """``(kernel_size, stride, dilation)`` of every square convolution and
    pooling layer of ``module``, in the order they were registered (for a
    chain, the order they run in). Other layers (ReLU, batch norm, dropout)
    do not change the receptive field and are skipped."""
    layers = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s = _pair(m.kernel_size, m), _pair(m.stride, m)
            d = _pair(getattr(m, "dilation", 1), m)
            layers.append((k, s, d))
    return layers


def _pair(value, module) -> int:
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(f"{module} is not square; its receptive field is not "
                             "one side")
        value = value[0]
    return int(value)


def _positive_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` in which every path from input to output
    carries a positive weight: convolutions average their inputs, biases are
    zero, batch norms are the identity and max-pools become average pools of
    the same geometry (a max routes its gradient to one input of its window,
    yet any of them can change the output)."""
    model = copy.deepcopy(model).double().eval()
    for name, m in list(model.named_modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()  # mean 0, variance 1, scale 1, shift 0
        elif isinstance(m, nn.MaxPool2d):
            pool = _AveragePool(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                m.return_indices)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, pool)
    return model


class _AveragePool(nn.AvgPool2d):
    """An average pool standing in for a max-pool; if the max-pool returned
    its indices, this returns (zero) indices too, so the model runs as before."""

    def __init__(self, kernel_size, stride, padding, ceil_mode, return_indices):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.return_indices = return_indices

    def forward(self, x):
        y = super().forward(x)
        return (y, torch.zeros(y.shape, dtype=torch.long)) if self.return_indices \
            else y


def _centre(output: torch.Tensor, position) -> tuple[int, int]:
    h, w = output.shape[-2:]
    return (h // 2, w // 2) if position is None else tuple(position)


def _output_unit(model, x: torch.Tensor, position, key) -> torch.Tensor:
    """The sum over channels of ``model(x)`` (or of ``model(x)[key]`` for a
    model that returns a dict) at one output position."""
    y = model(x)
    if key is not None:
        y = y[key]
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        raise TypeError("the model must return one tensor [B, C, H, W], got "
                        f"{type(y).__name__}")
    i, j = _centre(y, position)
    if not (0 <= i < y.shape[-2] and 0 <= j < y.shape[-1]):
        raise ValueError(f"position {(i, j)} is outside the output "
                         f"{list(y.shape[-2:])}")
    return y[:, :, i, j].sum()


def gradient_extent(model: nn.Module, input_shape, position=None,
                    key=None) -> torch.Tensor:
    """The theoretical receptive field of one output unit, measured.

    ``input_shape`` is ``(C, H, W)``; ``position`` is ``(row, column)`` in the
    output (default: its centre); ``key`` picks one output of a model that
    returns a dict (a backbone's ``"fc7"``, say). Back-propagates from that
    unit through a copy of ``model`` whose weights are all positive (see
    :func:`_positive_copy`; ``model`` itself is left alone) and returns a
    ``bool [H, W]`` mask of the input pixels with a non-zero gradient. Works
    for chains and for branching networks (ResNet, ASPP) alike, as long as
    they are built from convolutions, pools, ReLUs, batch norms and
    interpolation.
    """
    probe = _positive_copy(model)
    x = torch.ones(1, *input_shape, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(_output_unit(probe, x, position, key), x)
    return grad[0].abs().sum(0) > 0


def extent(mask: torch.Tensor) -> tuple[int, int]:
    """(height, width) of the bounding box of the ``True`` pixels of ``mask``
    (``bool [H, W]``); ``(0, 0)`` if there are none."""
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    if len(rows) == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def effective_receptive_field(model: nn.Module, input_shape, samples: int = 16,
                              position=None, seed: int = 0,
                              key=None) -> torch.Tensor:
    """Luo et al.'s effective receptive field: ``float32 [H, W]``, the mean
    over ``samples`` standard-normal inputs of the gradient magnitude of one
    output unit (summed over its channels) with respect to each input pixel
    (summed over input channels), normalised to sum to 1.

    ``position`` and ``key`` are as for :func:`gradient_extent`. The model is
    used as it is (put it in ``eval()`` mode first so that
    dropout and batch statistics do not vary between samples); the inputs are
    drawn from ``seed`` so the result repeats.
    """
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(input_shape[-2:], dtype=torch.float64)
    for _ in range(samples):
        x = torch.randn(1, *input_shape, generator=generator).requires_grad_(True)
        # autograd.grad, not backward: the model's own .grad stays untouched
        (grad,) = torch.autograd.grad(_output_unit(model, x, position, key), x)
        total += grad[0].abs().sum(0).double()
    if total.sum() == 0:
        raise ValueError("the gradient is zero everywhere: no input reaches the unit")
    return (total / total.sum()).float()


def mass_side(erf: torch.Tensor, fraction: float = 0.95, centre=None) -> int:
    """Side of the smallest square, centred on ``centre`` (default: the
    map's centre pixel, where :func:`effective_receptive_field` puts the
    unit of a same-size output), that holds ``fraction`` of the total of
    ``erf`` (a non-negative ``[H, W]`` map)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    erf = erf.double()
    if centre is None:
        centre = (erf.shape[0] // 2, erf.shape[1] // 2)
    i, j = centre
    total = erf.sum()
    for radius in range(max(erf.shape)):
        top, left = max(i - radius, 0), max(j - radius, 0)
        box = erf[top: i + radius + 1, left: j + radius + 1]
        if box.sum() >= fraction * total * (1 - 1e-6):  # float rounding
            return 2 * radius + 1
    return 2 * max(erf.shape) - 1


def zero_stuffed_kernel(weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """The ordinary kernel that equals ``weight`` dilated by ``dilation``.

    ``weight`` is ``[..., k, k]``; the result is ``[..., (k-1) d + 1,
    (k-1) d + 1]`` with ``weight[..., a, b]`` at ``[..., a d, b d]`` and
    zeros between: ``F.conv2d(x, w, dilation=d, padding=p)`` equals
    ``F.conv2d(x, zero_stuffed_kernel(w, d), padding=p)``.
    """
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be a positive int, got {dilation!r}")
    k_h, k_w = weight.shape[-2:]
    out = weight.new_zeros(*weight.shape[:-2], (k_h - 1) * dilation + 1,
                           (k_w - 1) * dilation + 1)
    out[..., ::dilation, ::dilation] = weight
    return out


def tap_counts(dilations, kernel_size: int = 3) -> torch.Tensor:
    """How many paths join each input offset to one output unit through a
    stack of ``kernel_size`` convolutions dilated by ``dilations``.

    Returns ``int64 [r, r]`` with ``r`` the stack's receptive field (see
    :func:`receptive_field`), the output unit at the centre. A zero is an
    input pixel the stack never reads, however large its receptive field:
    the *gridding* of equal dilations (Wang et al., WACV 2018).
    """
    counts = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    ones = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    for d in dilations:
        # spread every count over the d-spaced k x k taps of one more layer
        counts = F.conv_transpose2d(counts, ones, dilation=d)
    return counts[0, 0].round().long()
