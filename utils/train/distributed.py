"""Multi-process training with torchrun (DDP): set-up, sharding, reductions.

``torchrun --nproc_per_node=N -m utils.train ...`` starts N processes and sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without torchrun everything here is
a no-op for a single process. NCCL is used on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist


def init_from_env() -> torch.device | None:
    """Join the process group torchrun describes; return this rank's CUDA device
    (None on the CPU or without torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return None


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Only rank 0 writes files and prints."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op for one process)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


class ShardedSampler(torch.utils.data.Sampler):
    """Rank ``r`` of ``w`` takes items ``r, r + w, r + 2w, ...`` of one order.

    With ``shuffle`` the order is a permutation drawn from ``seed + epoch``, the
    same on every rank. Consecutive batches of ``B / w`` items on each rank
    then make up exactly the batches of ``B`` items one process would see, so a
    run on ``w`` processes follows the single-process run. For training
    (``drop_remainder``) the length is cut to a multiple of ``w`` so that every
    rank takes the same number of steps; evaluation keeps every item once.
    """

    def __init__(
        self, length, shuffle, seed=0, drop_remainder=False, rank_=None, world=None
    ):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world
        self.drop_remainder = drop_remainder
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.length)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.length, generator=g)

    def __iter__(self):
        order = self._order()
        if self.drop_remainder:
            order = order[: self.length - self.length % self.world]
        return iter(order[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.length // self.world
        return math.ceil(max(self.length - self.rank, 0) / self.world)
