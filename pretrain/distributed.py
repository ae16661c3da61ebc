"""Data-parallel pretraining (DDP) over the processes torchrun launches, equal to one process.

`python -m pretrain train` under torchrun reads its rank from the environment (WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR/PORT); without it, or with one process, nothing here changes the run.
With W processes, `pretrain.batch_size` stays the global batch: rank r trains on slice r of every
global batch, BatchNorm is synchronised over the W slices and DDP averages the gradients, so a step
equals the single-process step on the whole batch (up to float summation order) as long as a
method's loss is a mean over its samples. Queues receive the keys of all ranks, in rank order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.errors import UserError
from pretrain.sync_batchnorm import convert_sync_batchnorm


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank on this node: the GPU it drives

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the log, checkpoints and export, and shows progress."""
        return self.rank == 0

    def device(self, device: str) -> torch.device:
        return torch.device("cuda", self.local_rank) if device == "cuda" else torch.device("cpu")


@contextlib.contextmanager
def process_group(device: str) -> Iterator[World]:
    """Join torchrun's process group for the block (NCCL on `cuda`, gloo on `cpu`); one process: no group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        yield World()
        return
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"process {world.local_rank} of this node has no GPU ({torch.cuda.device_count()} "
                            "visible): launch at most one process per GPU (torchrun --nproc-per-node).")
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        yield world
    finally:
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world: World) -> int:
    if global_batch % world.size:
        raise UserError(f"pretrain.batch_size {global_batch} (the global batch) does not split over {world.size} "
                        f"processes: set it to a multiple of {world.size} or change the number of processes.")
    return global_batch // world.size


def rank_indices(order: list[int], global_batch: int, world: World) -> list[int]:
    """This rank's samples of `order`: slice `rank` of every complete global batch, so the ranks' batches
    concatenated in rank order are the single-process batches."""
    local = per_rank_batch(global_batch, world)
    first = world.rank * local
    return [index for start in range(0, len(order) - global_batch + 1, global_batch)
            for index in order[start + first:start + first + local]]


def data_parallel(model: nn.Module, world: World, unused_parameters: bool) -> nn.Module:
    """`model` as it trains in `world`: itself outside a process group (one process); in a group (torchrun, or a
    group of one as `benchmarks/gpu_check.py` makes) its BatchNorms are converted in place to `SyncBatchNorm` and it
    is wrapped in DDP (save `model` itself: its state-dict keys are unchanged)."""
    if not dist.is_initialized():
        return model
    convert_sync_batchnorm(model)
    return DistributedDataParallel(
        model, device_ids=[world.local_rank] if next(model.parameters()).is_cuda else None,
        # Buffers stay equal on all ranks by construction (synchronised BN statistics, gathered queue keys)
        # once synced at init: re-broadcasting them, a queue of 65536 keys included, every step costs time.
        forward_sync_buffers=False,
        # Momentum networks need no search: they have requires_grad False, which DDP skips.
        find_unused_parameters=unused_parameters)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """`x` of every rank concatenated along dim 0 in rank order, without gradient (MoCo's concat_all_gather)."""
    size = _world_size()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _own_share(index: torch.Tensor) -> torch.Tensor:
    return index.view(_world_size(), -1)[dist.get_rank()]


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, seed: int, iteration: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MoCo's shuffle BN (batch_shuffle_ddp): this rank's share of the global batch under a permutation,
    and the index `batch_unshuffle` undoes it with. One process: `x` itself and None.

    The permutation comes from (seed, iteration), the same on every rank without a broadcast and without
    drawing from the global RNG. It hides a key's pairing from per-process BatchNorm statistics; under
    `SyncBatchNorm` the statistics are global anyway and the shuffle changes only summation order.
    """
    if _world_size() == 1:
        return x, None
    gathered = concat_all_gather(x)
    digest = hashlib.sha256(f"shuffle/{seed}/{iteration}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    permutation = torch.randperm(len(gathered), generator=gen).to(x.device)
    return gathered[_own_share(permutation)], torch.argsort(permutation)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, unshuffle: torch.Tensor | None) -> torch.Tensor:
    """The outputs of a shuffled batch back in this rank's original order (batch_unshuffle_ddp)."""
    return x if unshuffle is None else concat_all_gather(x)[_own_share(unshuffle)]


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the ranks (the global loss when each rank's is a mean over its samples)."""
    size = _world_size()
    if size == 1:
        return values
    total = values.detach().clone()
    dist.all_reduce(total)
    return total / size
