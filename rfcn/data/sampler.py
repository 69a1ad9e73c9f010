"""Sampling schedules: which images, with which random seeds, at which iteration.

Training order is a pure function of (seed, global iteration), with no state carried from
one iteration to the next, so a run restarted at iteration i reproduces batch i onwards
exactly. The stream is cut into epochs; epoch e is a seeded permutation of the dataset,
split by aspect ratio into two groups (w >= h and w < h), each cut into full global batches;
the leftovers of both groups form mixed batches and what remains (< one batch) is dropped —
different images each epoch. The number of batches per epoch depends only on the group
sizes, so iteration i maps to (epoch, position) without replaying earlier epochs.

Each sample also gets a 63-bit seed drawn from (seed, iteration); the loader derives all of
its augmentation from it, which makes results independent of worker count and scheduling.

Shape shorthand: N images in the dataset, G global batch size (world_size x per-rank batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import count

import numpy as np

__all__ = ["SampleSpec", "TrainSchedule", "TrainBatchSampler", "shard_range"]

# (dataset index, sample seed, global iteration)
SampleSpec = tuple[int, int, int]

_EPOCH_STREAM = 0x0E90C4
_SEED_STREAM = 0x5EED5


class TrainSchedule:
    """Global batches of training samples as a pure function of the iteration.

    Args:
        aspect_ratios: w/h of every image (length N).
        global_batch_size: G = world_size x images per rank.
        seed: the run's seed.
        aspect_grouping: batch images of the same orientation together.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[float],
        global_batch_size: int,
        seed: int,
        aspect_grouping: bool = True,
    ) -> None:
        n = len(aspect_ratios)
        if n == 0:
            raise ValueError("cannot sample from an empty dataset")
        if global_batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {global_batch_size}")
        self.num_images = n
        self.batch_size = global_batch_size
        self.seed = int(seed)
        ar = np.asarray(aspect_ratios, dtype=np.float64)
        self.group_of = (ar < 1.0).astype(np.int64) if aspect_grouping else np.zeros(n, np.int64)
        # A dataset smaller than one batch repeats within an epoch.
        self.repeats = math.ceil(global_batch_size / n)
        sizes = [int((self.group_of == g).sum()) * self.repeats for g in (0, 1)]
        g = global_batch_size
        self.batches_per_epoch = sum(s // g for s in sizes) + sum(s % g for s in sizes) // g
        self._cache: tuple[int, np.ndarray] | None = None

    def group_members(self) -> list[np.ndarray]:
        """Indices of each aspect group (group 1 is empty without grouping)."""
        return [np.flatnonzero(self.group_of == g) for g in (0, 1)]

    def _epoch(self, epoch: int) -> np.ndarray:
        """int64[batches_per_epoch, G] dataset indices of every batch of ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, _EPOCH_STREAM, epoch])
        order = np.concatenate([rng.permutation(self.num_images) for _ in range(self.repeats)])
        g = self.batch_size
        batches, leftovers = [], []
        for grp in (0, 1):
            members = order[self.group_of[order] == grp]
            full = len(members) // g * g
            batches.extend(members[:full].reshape(-1, g))
            leftovers.append(members[full:])
        mixed = np.concatenate(leftovers)
        full = len(mixed) // g * g
        batches.extend(mixed[:full].reshape(-1, g))
        plan = np.stack(batches)[rng.permutation(len(batches))]
        assert len(plan) == self.batches_per_epoch
        self._cache = (epoch, plan)
        return plan

    def global_batch(self, iteration: int) -> list[tuple[int, int]]:
        """The G (dataset index, sample seed) pairs of global iteration ``iteration``."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        epoch, pos = divmod(iteration, self.batches_per_epoch)
        indices = self._epoch(epoch)[pos]
        seeds = np.random.default_rng([self.seed, _SEED_STREAM, iteration]).integers(
            0, 2**63 - 1, size=self.batch_size, dtype=np.int64)
        return [(int(i), int(s)) for i, s in zip(indices, seeds, strict=True)]


class TrainBatchSampler:
    """Infinite batch sampler for ``torch.utils.data.DataLoader(batch_sampler=...)``.

    Yields, from ``start_iter`` on, this rank's slice ``[rank * B, (rank + 1) * B)`` of each
    global batch as a list of `SampleSpec`.
    """

    def __init__(
        self, schedule: TrainSchedule, images_per_batch: int, rank: int, world_size: int,
        start_iter: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        if schedule.batch_size != images_per_batch * world_size:
            raise ValueError("schedule batch size must be images_per_batch * world_size")
        self.schedule = schedule
        self.images_per_batch = images_per_batch
        self.rank = rank
        self.start_iter = int(start_iter)

    def __iter__(self) -> Iterator[list[SampleSpec]]:
        b, r = self.images_per_batch, self.rank
        for it in count(self.start_iter):
            batch = self.schedule.global_batch(it)[r * b:(r + 1) * b]
            yield [(i, s, it) for i, s in batch]


def shard_range(num_items: int, rank: int, world_size: int) -> range:
    """Contiguous shard of ``range(num_items)`` for ``rank``; shards cover every item once
    and differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
    per, extra = divmod(num_items, world_size)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))
