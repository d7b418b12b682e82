"""Batch norm with frozen statistics and affine parameters (chapters 07-08).

A detector trains on a few large images per GPU: batch statistics over two
images are too noisy to normalise with, so Mask R-CNN (He et al. 2017, after
Detectron) fine-tunes its ImageNet backbone with every batch norm frozen into
the fixed affine map it computes at evaluation:

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias

The four tensors are buffers, not parameters: no optimiser updates them and
``train()`` does not switch to batch statistics. The state-dict keys are
batch norm's (``weight``, ``bias``, ``running_mean``, ``running_var``), so a
file saved from ``nn.BatchNorm2d`` loads into it; its ``num_batches_tracked``
is dropped on loading. Same semantics and keys as torchvision's
``torchvision.ops.FrozenBatchNorm2d``.
"""

from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """``float [B, C, H, W]`` -> the same shape, ``x * scale + shift`` per
    channel, with ``scale = weight / sqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale``."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # A BatchNorm2d's state also counts its training batches; frozen, there
        # is nothing to count.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The per-channel scale and shift are computed on C numbers, then
        # broadcast: one multiply-add over the feature map.
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # (C,)
        shift = self.bias - self.running_mean * scale  # (C,)
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
