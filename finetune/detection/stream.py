"""Detectron2's training stream as a function of (seed, iteration): a resumed run trains on the same batches.

Detectron2's loader restarts on resume: its sampler from the first index, its augmentations from the
worker RNGs, its aspect-ratio buckets empty. This stream keeps Detectron2's order (TrainingSampler's
shuffled infinite stream from the run's seed, split over the ranks, then grouped into batches of wide or
tall images as AspectRatioGroupedDataset does), but computes it from the images' sizes alone, so a resume
skips the finished iterations without loading an image. Each sample is mapped (decoded, augmented) under
RNGs seeded by its position in the stream, and the model's own draws (proposal sampling) under RNGs
seeded by the iteration (`IterationSeed`), so neither depends on what ran before.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import build
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from core.errors import UserError


def _derived_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0]) % 2**31


@contextlib.contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's global RNGs seeded with `seed` inside, restored after."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_all_rng(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def batch_positions(wide: list[bool], batch_size: int, seed: int, grouping: bool) -> Iterator[list[tuple[int, int]]]:
    """This rank's batches as (position in its stream, dataset index) lists, in training order."""
    buckets: tuple[list[tuple[int, int]], ...] = ([], [])
    for position, index in enumerate(TrainingSampler(len(wide), seed=seed)):
        bucket = buckets[0 if wide[index] or not grouping else 1]
        bucket.append((position, index))
        if len(bucket) == batch_size:
            yield bucket[:]
            bucket.clear()


class _SeededSamples(torch.utils.data.Dataset):
    """Dataset dicts mapped at (position, index): the augmentation draws depend on the position only."""

    def __init__(self, dicts: list[dict[str, Any]], mapper: Callable[[dict[str, Any]], Any], seed: int) -> None:
        self.dicts, self.mapper, self.seed = dicts, mapper, seed

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        position, index = key
        with _seeded_rngs(_derived_seed(self.seed, comm.get_rank(), position)):
            sample = self.mapper(dict(self.dicts[index]))
        if sample is None:
            raise UserError(f"Detectron2's mapper dropped training image {self.dicts[index].get('file_name')}; "
                            "remove it from the training set.")
        return sample


class ResumableTrainStream:
    """The per-rank batches of Detectron2's train loader for `cfg`, from iteration `start_iter` on.

    Iterating is lazy: `start_iter` may be set (after the checkpoint is loaded) until the first batch is drawn.
    """

    def __init__(self, cfg: CfgNode) -> None:
        settings = build._train_loader_from_config(cfg)
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise UserError(f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN}: only TrainingSampler streams "
                            "resume exactly.")
        world = comm.get_world_size()
        if settings["total_batch_size"] % world:
            raise UserError(f"ims_per_batch {settings['total_batch_size']} is not divisible by {world} processes.")
        self.dicts = list(settings["dataset"])
        self.mapper = settings["mapper"]
        self.batch_size = settings["total_batch_size"] // world
        self.grouping = settings["aspect_ratio_grouping"]
        self.workers = settings["num_workers"]
        self.seed = cfg.SEED
        self.start_iter = 0

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        wide = [d["width"] > d["height"] for d in self.dicts]
        batches = itertools.islice(batch_positions(wide, self.batch_size, self.seed, self.grouping),
                                   self.start_iter, None)
        # Its own generator: creating the iterator would otherwise draw its worker seed from the global RNG,
        # at iteration start_iter.
        yield from torch.utils.data.DataLoader(
            _SeededSamples(self.dicts, self.mapper, self.seed), batch_sampler=batches, num_workers=self.workers,
            collate_fn=list, generator=torch.Generator().manual_seed(self.seed),
        )


class IterationSeed(HookBase):
    """Seeds the global RNGs from (seed, rank, iteration) before each step: the model's random draws
    (RPN and RoI sampling) at iteration i are the same in a resumed run."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def before_step(self) -> None:
        seed_all_rng(_derived_seed(self.seed, comm.get_rank(), self.trainer.iter, 1))
