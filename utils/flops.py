"""Counting the floating-point operations of a forward pass (chapter 02).

:func:`count_flops` runs the model once under torch's own
:class:`torch.utils.flop_counter.FlopCounterMode`, which sees every matrix
multiplication and convolution that reaches torch's dispatcher: modules and
``torch.nn.functional`` calls alike. Chapter 02 derives the rule for one
convolution by hand and checks it against this count; later chapters use it to
compare models' costs.

Convention (torch's): a multiply-accumulate is 2 FLOPs; convolutions,
transposed convolutions, linear layers and matrix products are counted;
biases, activations, normalisation and pooling are not (one operation per
value, a small fraction of the rest).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_flops(model: nn.Module, *inputs, **kwargs) -> int:
    """FLOPs of one call ``model(*inputs, **kwargs)`` (2 per multiply-accumulate)."""
    with FlopCounterMode(display=False) as counter:
        model(*inputs, **kwargs)
    return int(counter.get_total_flops())
