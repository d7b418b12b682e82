"""Summing a metric's counts over DDP ranks (no-op for a single process).

Every accumulator in :mod:`utils.metrics` (confusion matrix, panoptic
quality) keeps plain count tensors, so adding up the ranks' counts gives the
dataset's numbers exactly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place; return it.

    NCCL reduces CUDA tensors only, so under that backend a CPU tensor makes a
    round trip through the current CUDA device.
    """
    if not (dist.is_available() and dist.is_initialized()) or (
        dist.get_world_size() == 1
    ):
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        tensor.copy_(on_gpu)
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
