"""Multi-process training with torchrun (DDP): set-up, sharding, reductions.

``torchrun --nproc_per_node=N -m utils.train ...`` starts N processes and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
without torchrun everything here is a no-op for a single process. NCCL is used
on CUDA, gloo on the CPU.

Training items are sharded by :class:`torch.utils.data.DistributedSampler`
(``drop_last=True``: every rank takes the same number of steps, and rank r of w
takes items r, r + w, ... of one permutation drawn from ``seed + epoch``, so
the ranks' batches together are the single-process batch). Validation is not:
that sampler pads the last shard with repeated items, which would count them
twice in every metric, so :class:`EvalShards` gives uneven shards instead.
"""

from __future__ import annotations

import gc
import math
import os
from datetime import timedelta

import torch
import torch.distributed as dist

# torchrun's variables; WORLD_SIZE > 1 without the others is a usage mistake.
_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class LaunchError(RuntimeError):
    """The environment asks for several processes but is not torchrun's."""


def requested_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset), checked."""
    value = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        world = int(value)
    except ValueError:
        raise LaunchError(f"WORLD_SIZE={value!r} is not a number") from None
    if world < 1:
        raise LaunchError(f"WORLD_SIZE={value!r} must be at least 1")
    return world


def init_from_env(timeout_s: float = 600) -> torch.device | None:
    """Join the process group torchrun describes; return this rank's CUDA device
    (None on the CPU or without torchrun)."""
    if requested_world_size() <= 1 or dist.is_initialized():
        return None
    missing = [v for v in _TORCHRUN_VARS if not os.environ.get(v)]
    if missing:
        raise LaunchError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} "
            "unset: start several processes with torchrun --nproc_per_node=N -m "
            "utils.train ..., or unset WORLD_SIZE for one process"
        )
    timeout = timedelta(seconds=timeout_s)
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=timeout)
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo", timeout=timeout)
    return None


def shutdown() -> None:
    """Leave the process group together and while Python is fully alive.

    Two ways to abort a rank at exit (SIGABRT, "terminate called without an
    active exception") are closed here. A DistributedDataParallel wrapper
    kept alive by a reference cycle is otherwise destroyed during interpreter
    finalisation, when its C++ reducer can no longer take the GIL: collecting
    garbage first destroys it now. And gloo aborts a process whose group is
    destroyed while a peer is still inside a collective: every rank waits at a
    barrier before the group goes.
    """
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Only rank 0 writes files and prints."""
    return rank() == 0


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def train_sampler(dataset, seed: int) -> torch.utils.data.DistributedSampler:
    """Training shards: one permutation per epoch (``seed + epoch``), cut to a
    multiple of the number of ranks."""
    return torch.utils.data.DistributedSampler(
        dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed,
        drop_last=True)


class EvalShards(torch.utils.data.Sampler):
    """Rank ``r`` of ``w`` takes items ``r, r + w, r + 2w, ...``: every item
    exactly once over all ranks, in shards that differ by at most one."""

    def __init__(self, length: int, rank_: int | None = None,
                 world: int | None = None):
        self.length = length
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return math.ceil(max(self.length - self.rank, 0) / self.world)
