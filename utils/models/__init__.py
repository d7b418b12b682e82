"""Canonical models and the registry behind ``python -m utils.train --model NAME``.

Every model chapter builds its model in the notebook and keeps the canonical
copy here; a test pins the two together. Each registry entry is a class (or a
function) called as ``Model(num_classes, width=...)``; add a line when a chapter
adds a model.
"""

from __future__ import annotations

import torch.nn as nn

from utils.models.tiny_fcn import TinyFCN

MODELS = {
    "tiny_fcn": TinyFCN,  # chapter 00
}


def build_model(name: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """Build registered model ``name`` for ``num_classes`` classes."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](num_classes, width=width)
