from __future__ import annotations

import numpy as np
import pytest

from rfcn.data.sampler import TrainBatchSampler, TrainSchedule, shard_range

ASPECTS = [1.5] * 7 + [0.5] * 5  # 7 landscape, 5 portrait


def test_batches_are_a_pure_function_of_iteration() -> None:
    a = TrainSchedule(ASPECTS, 3, seed=5)
    forward = [a.global_batch(i) for i in range(20)]
    b = TrainSchedule(ASPECTS, 3, seed=5)
    backward = [b.global_batch(i) for i in reversed(range(20))][::-1]
    assert forward == backward
    assert forward != [TrainSchedule(ASPECTS, 3, seed=6).global_batch(i) for i in range(20)]
    seeds = [s for batch in forward for _, s in batch]
    assert len(set(seeds)) == len(seeds)  # every sample its own seed


def test_epoch_structure_and_grouping() -> None:
    s = TrainSchedule(ASPECTS, 2, seed=0)
    # 7 // 2 + 5 // 2 full group batches, the two leftovers form one mixed batch
    assert s.batches_per_epoch == 3 + 2 + 1
    for epoch in range(3):
        batches = [s.global_batch(epoch * 6 + k) for k in range(6)]
        idx = [i for b in batches for i, _ in b]
        assert len(idx) == len(set(idx)) == 12  # an epoch has no repeats
        groups = [{ASPECTS[i] < 1 for i, _ in b} for b in batches]
        assert sum(len(g) == 1 for g in groups) >= 5


def test_no_grouping_and_tiny_dataset() -> None:
    s = TrainSchedule([1.0, 0.5], 5, seed=1, aspect_grouping=False)
    batch = s.global_batch(0)
    assert len(batch) == 5 and {i for i, _ in batch} == {0, 1}
    assert s.batches_per_epoch == 1
    with pytest.raises(ValueError):
        TrainSchedule([], 2, seed=0)


def test_batch_sampler_slices_the_global_batch() -> None:
    s = TrainSchedule(ASPECTS, 4, seed=2)
    it0 = iter(TrainBatchSampler(s, 2, rank=0, world_size=2, start_iter=3))
    it1 = iter(TrainBatchSampler(s, 2, rank=1, world_size=2, start_iter=3))
    for k in range(3, 8):
        g = s.global_batch(k)
        assert next(it0) == [(i, sd, k) for i, sd in g[:2]]
        assert next(it1) == [(i, sd, k) for i, sd in g[2:]]
    with pytest.raises(ValueError):
        TrainBatchSampler(s, 2, rank=2, world_size=2)


@pytest.mark.parametrize(("n", "w"), [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shards_cover_everything_once(n: int, w: int) -> None:
    shards = [list(shard_range(n, r, w)) for r in range(w)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert np.all(np.diff([i for s in shards for i in s]) > 0)
