"""Data-parallel extraction across processes and nodes (torchrun, Slurm) with torch.distributed.

Every rank loads its own replica of the model and captures a deterministic, disjoint share of the
capture's shards into one shared work directory (emovec.capture does the sharing; this module only
says who is who, where each replica lives, and provides the barrier). Nothing is exchanged but
barriers: document means land in disjoint rows of shared memory-mapped files and the neutral moments
are per-shard partial sums that rank 0 adds in shard order, so the result is bit-identical to one
process on the same inputs, and a rerun with any number of ranks resumes at the unfinished shards.
The gloo backend is used for the barriers on CPU and GPU alike (no tensors cross it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from emovec.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: global rank and world size, rank and size on this node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that holds the artifact lock, prints, and writes the artifact."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op for one process)."""
        if self.world > 1:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (set by torchrun/Slurm)",
                          param="ranks") from None


def join(timeout: timedelta = timedelta(hours=24)) -> Ranks:
    """Read the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT,
    as torchrun sets them) and join the process group; one process when WORLD_SIZE is unset or 1.
    `timeout` bounds a barrier: long, because ranks meet only at the start and end of each pass."""
    world = _env_int("WORLD_SIZE", 1)
    ranks = Ranks(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1))
    if not 0 <= ranks.rank < world or not 0 <= ranks.local_rank < ranks.local_world:
        raise ConfigError(f"rank {ranks.rank} of {world} (local {ranks.local_rank} of {ranks.local_world}) is "
                          "out of range", param="ranks")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", rank=ranks.rank, world_size=world, timeout=timeout)
    return ranks


def leave(ranks: Ranks) -> None:
    """Leave the process group joined by `join` (after the last barrier)."""
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str, ranks: Ranks) -> tuple[str, list[int] | None]:
    """Where this rank's replica lives: `cuda` means one GPU per rank (cuda:LOCAL_RANK); `auto` spreads the
    replica over this rank's contiguous group of the node's GPUs (GPUs / ranks per node of them, through
    accelerate's device map); `cpu` stays. Returns the device and, for `auto`, the GPU indices."""
    if ranks.world == 1 or device == "cpu":
        return device, None
    if device.startswith("cuda:"):
        raise ConfigError(f"device {device!r} names one GPU, but {ranks.world} ranks share the job; use cuda "
                          "(one GPU per rank) or auto (a group of GPUs per rank)", param="device")
    n_gpus = torch.cuda.device_count()
    if device == "cuda":
        if ranks.local_rank >= n_gpus:
            raise ConfigError(f"{ranks.local_world} ranks on this node but only {n_gpus} GPU(s)", param="device")
        return f"cuda:{ranks.local_rank}", None
    per_rank = n_gpus // ranks.local_world
    if per_rank < 1:
        raise ConfigError(f"{ranks.local_world} ranks on this node but only {n_gpus} GPU(s)", param="device")
    return device, list(range(ranks.local_rank * per_rank, (ranks.local_rank + 1) * per_rank))
