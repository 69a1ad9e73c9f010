"""Training and test loaders over torch ``DataLoader``.

Training: infinite; batch ``i`` (images, augmentation, substitutes for bad files) is a pure
function of (seed, i), whatever ``num_workers``: the batch sampler hands every sample its own
seed and the worker derives all randomness from it (see `rfcn.data.sampler`). Restarting with
``start_iter=i`` reproduces batch i onwards; W processes with B images per batch see exactly
the samples of one process with W*B.

A file that fails to load is logged (naming the file) and replaced by a substitute drawn from
the sample's seed: first from the same aspect group, then from anywhere (up to `MAX_ATTEMPTS`
tries per sample). Its path is in ``TrainBatch.skipped``; with ``strict=True`` the ValueError
is raised instead. A sample whose every try failed is left out (the batch is short). A batch
is never empty: when every try of every sample failed, the dataset is (almost) entirely
unreadable and the loader raises RuntimeError saying so, rather than hand the model nothing.
One `TrainBatch` is yielded per global iteration, so the processes of a distributed run stay
in step.

Images leave the workers as uint8 Tensor[3, H, W] (a quarter of float32's bytes through the
worker queues and to the device); the model's transform converts them to float and
normalises, on its device (`rfcn.models.transform.RFCNTransform`), with the same values
``rfcn.data.image_io.to_tensor`` gives. ``pin_memory=True`` (for CUDA) pins the batches.
A worker writes each batch's images into one of a few shared-memory slots it reuses and
sends the targets as arrays (`rfcn.data.shared_slots`: a fresh segment per tensor cost as
much as decoding the image); workers fork with the parent's heap frozen (`iterate_forked`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import random
import signal
import weakref
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from rfcn.data.collate import collate_detection
from rfcn.data.interfaces import DetectionDataset, Transform
from rfcn.data.mixing import SampleMixer
from rfcn.data.process_memory import release_free_heap
from rfcn.data.records import to_uint8_tensor
from rfcn.data.sampler import SampleSpec, TrainBatchSampler, TrainSchedule, shard_range
from rfcn.data.shared_slots import SlotMappings, SlotRing, pack_targets, unpack_targets

__all__ = ["TrainBatch", "TrainLoader", "TestLoader", "UnreadableImagesError", "build_test_loader",
           "build_train_loader", "iterate_forked"]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 50  # with half the files bad, a batch comes out empty with p < 1e-15
SAME_GROUP_ATTEMPTS = 10  # then substitutes come from the whole dataset (a group may be all bad)


class UnreadableImagesError(RuntimeError):
    """No image of a training batch could be loaded after every substitute: the image folder
    or the paths in the annotations are wrong (a user's mistake, reported in one line)."""


class TrainBatch(NamedTuple):
    images: list[torch.Tensor]  # Tensor[3, H, W] uint8 RGB
    targets: list[dict[str, Any]]
    skipped: list[str]  # paths of files that failed to load in this batch


class _Failure(NamedTuple):
    path: str
    reason: str


class _Loaded(NamedTuple):
    image: torch.Tensor | None
    target: dict[str, Any] | None
    failures: list[_Failure]


def drop_ignored(target: dict[str, Any]) -> dict[str, Any]:
    """Remove crowd and difficult boxes (ignored for training) from a target."""
    keep = ~(target["iscrowd"] | target["difficult"])
    if bool(keep.all()):
        return target
    out = dict(target)
    for key in ("boxes", "labels", "iscrowd", "difficult"):
        out[key] = target[key][keep]
    return out


class _TrainSamples:
    """Map-style view used by DataLoader workers: SampleSpec -> `_Loaded`."""

    def __init__(
        self, dataset: DetectionDataset, transforms: Transform | None, strict: bool,
        groups: list[np.ndarray], group_of: np.ndarray, mixer: SampleMixer | None = None,
    ) -> None:
        self.dataset = dataset
        self.transforms = transforms
        self.mixer = mixer
        self.strict = strict
        self.groups = groups
        self.group_of = group_of
        self.slots = SlotRing(SLOTS)  # used in the workers only

    def __getitem__(self, spec: SampleSpec) -> _Loaded:
        index, seed, iteration = spec
        members = self.groups[int(self.group_of[index])]
        failures: list[_Failure] = []
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng([seed, attempt])
            if 0 < attempt < SAME_GROUP_ATTEMPTS:  # a substitute of the same orientation
                index = int(members[rng.integers(len(members))])
            elif attempt >= SAME_GROUP_ATTEMPTS:
                index = int(rng.integers(len(self.group_of)))
            try:
                image, target = self._sample(index, rng, iteration)
            except ValueError as e:
                if self.strict:
                    raise
                failures.append(_Failure(self.dataset.image_path(index), str(e)))
                continue
            return _Loaded(image, drop_ignored(target), failures)
        return _Loaded(None, None, failures)

    def _sample(self, index: int, rng: np.random.Generator,
                iteration: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.mixer is None or not self.mixer.active(iteration):
            return self.dataset.get_uint8(index, rng, self.transforms)
        ds = self.dataset
        image, target = self.mixer(lambda i: (ds.load_image(i), ds.get_annotation(i)),
                                   len(ds), index, rng)
        tf = self.transforms if self.transforms is not None else getattr(ds, "transforms", None)
        if tf is not None:
            image, target = tf(image, target, rng)
        return to_uint8_tensor(image), target


def _collate_train(items: Sequence[_Loaded]) -> tuple[TrainBatch, list[_Failure]]:
    images = [it.image for it in items if it.image is not None]
    targets = [it.target for it in items if it.target is not None]
    failures = [f for it in items for f in it.failures]
    worker = get_worker_info()
    if worker is not None:  # one reused shared-memory slot per batch (rfcn.data.shared_slots)
        images = worker.dataset.slots.pack(images)
        targets = pack_targets(targets)
    return TrainBatch(images, targets, [f.path for f in failures]), failures


PREFETCH_FACTOR = 2  # batches in flight per worker (torch's default)
SLOTS = PREFETCH_FACTOR + 2  # shared-memory slots per worker (rfcn.data.shared_slots)
WORKER_NICENESS = 10  # loader workers run below the computation


def _init_worker(seed: int, worker_id: int) -> None:
    # Our augmentation uses per-sample generators; these seeds only make stray uses of the
    # global RNGs (in user transforms) repeatable from run to run.
    s = (seed * 1000003 + worker_id) % 2**32
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    torch.set_num_threads(1)
    cv2.setNumThreads(0)  # serial (1 waits on pool threads that fork did not copy)
    # A Ctrl-C or SIGTERM sent to the whole process group is the main process's to handle
    # (it saves a checkpoint and ends the workers; the trainer closes its loader whenever
    # its loop ends, so no worker is left for the interpreter's exit to terminate).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Workers yield the CPU to the computation they feed (rfcn.utils.process: thread budget).
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


def iterate_forked(loader: DataLoader) -> Iterator[Any]:
    """``iter(loader)``, with the Python heap frozen (``gc.freeze``) while its workers fork:
    a garbage collection in a worker then leaves the objects it inherited alone, instead of
    writing to every page that holds one (copy-on-write: ~100 MiB per worker of a training
    process, measured in tests/data/test_loader.py), as the gc module's documentation advises."""
    if loader.num_workers == 0:
        return iter(loader)
    release_free_heap()  # free heap pages would stay resident, shared by every worker
    gc.freeze()
    try:
        it = iter(loader)  # forks the workers now
    finally:
        gc.unfreeze()
    _LIVE_ITERATORS.add(it)
    return it


# Iterators whose workers may still run. Workers ignore SIGTERM (`_init_worker`), so the
# terminate() with which multiprocessing's own exit hook ends daemonic children would not end
# them, and its join() would wait forever: a script or a crashed process that exits with a
# loader iterator still referenced (by a global, or the traceback of an uncaught exception)
# would hang. This hook, registered after multiprocessing's and so run before it, asks them
# to stop the way the iterator's own shutdown does.
_LIVE_ITERATORS: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _shut_down_live_workers() -> None:
    for it in list(_LIVE_ITERATORS):
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()


class _FailureLog:
    """Logs each failing file with a warning the first time, then at debug level."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.count = 0

    def log(self, failures: Sequence[_Failure]) -> None:
        for f in failures:
            self.count += 1
            level = logging.DEBUG if f.path in self.seen else logging.WARNING
            self.seen.add(f.path)
            logger.log(level, "skipping unreadable image: %s", f.reason)


class TrainLoader:
    """Infinite iterable of `TrainBatch`, one per global iteration from ``start_iter``.

    ``num_skipped`` counts files skipped so far (a file failing twice counts twice).
    """

    def __init__(
        self, dataset: DetectionDataset, images_per_batch: int, *, seed: int, start_iter: int,
        num_workers: int, aspect_grouping: bool, strict: bool, rank: int, world_size: int,
        transforms: Transform | None, pin_memory: bool = False,
        mixer: SampleMixer | None = None,
    ) -> None:
        if images_per_batch < 1:
            raise ValueError(f"images_per_batch must be >= 1, got {images_per_batch}")
        if len(dataset) == 0:
            raise ValueError("the training dataset has no images")
        self.dataset = dataset
        self.start_iter = int(start_iter)
        schedule = TrainSchedule(dataset.aspect_ratios, images_per_batch * world_size, seed,
                                 aspect_grouping)
        self.batch_sampler = TrainBatchSampler(schedule, images_per_batch, rank, world_size,
                                               start_iter)
        samples = _TrainSamples(dataset, transforms, strict, schedule.group_members(),
                                schedule.group_of, mixer)
        self._failures = _FailureLog()
        # batches from workers: images out of their slot (pinning copies them already)
        self._unpack_images = num_workers > 0 and not pin_memory
        self._slots = SlotMappings(SLOTS * max(num_workers, 1))
        self._unpack_targets = num_workers > 0
        self._loader = DataLoader(
            samples,  # type: ignore[arg-type]
            batch_sampler=self.batch_sampler,
            collate_fn=_collate_train,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            prefetch_factor=PREFETCH_FACTOR if num_workers > 0 else None,
            worker_init_fn=partial(_init_worker, seed * 131 + rank) if num_workers else None,
            # DataLoader draws a base seed when iterated; a private generator keeps it from
            # consuming the global torch RNG (which the trainer checkpoints).
            generator=torch.Generator().manual_seed(int(seed)),
        )

    @property
    def num_skipped(self) -> int:
        return self._failures.count

    def __iter__(self) -> Iterator[TrainBatch]:
        for it, (batch, failures) in enumerate(iterate_forked(self._loader), self.start_iter):
            if self._unpack_images:
                batch = batch._replace(images=self._slots.unpack(batch.images))
            if self._unpack_targets:
                batch = batch._replace(targets=unpack_targets(batch.targets))
            self._failures.log(failures)
            if not batch.images:
                raise UnreadableImagesError(
                    f"iteration {it}: none of the {len(failures)} attempts to load an image "
                    f"for this batch succeeded ({len(self._failures.seen)} distinct files have "
                    f"failed so far); the training images look unreadable: check the image "
                    f"directory / file paths. Last error: "
                    f"{failures[-1].reason if failures else 'unknown'}")
            yield batch


def build_train_loader(
    dataset: DetectionDataset,
    images_per_batch: int,
    *,
    seed: int,
    start_iter: int = 0,
    num_workers: int = 2,
    aspect_grouping: bool = True,
    strict: bool = False,
    rank: int = 0,
    world_size: int = 1,
    transforms: Transform | None = None,
    pin_memory: bool = False,
    mixer: SampleMixer | None = None,
) -> TrainLoader:
    """Infinite training loader; see the module docstring.

    Args:
        dataset: a detection dataset (`CocoDetection`, `VOCDetection`, `ConcatDetection`).
        images_per_batch: images per process per iteration (B).
        seed: determines the order and all augmentation.
        start_iter: first global iteration to produce (resume).
        num_workers: DataLoader worker processes (0 loads in this process).
        aspect_grouping: batch images of the same orientation (w >= h / w < h) together.
        strict: raise on the first file that fails to load instead of skipping it.
        rank, world_size: this process takes slice rank of each global batch of W*B.
        transforms: augmentation; None uses the dataset's own ``transforms``.
        pin_memory: pin the batches' tensors (page-locked: faster, asynchronous copies to a
            CUDA device); use it when training on CUDA.
        mixer: mosaic / copy-paste before ``transforms`` (`rfcn.data.mixing`), None: off.

    Batches: `TrainBatch` with uint8 Tensor[3, H, W] images.
    """
    return TrainLoader(dataset, images_per_batch, seed=seed, start_iter=start_iter,
                       num_workers=num_workers, aspect_grouping=aspect_grouping, strict=strict,
                       rank=rank, world_size=world_size, transforms=transforms,
                       pin_memory=pin_memory, mixer=mixer)


class _TestSamples:
    def __init__(self, dataset: DetectionDataset, strict: bool) -> None:
        self.dataset = dataset
        self.strict = strict

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> _Loaded:
        try:  # no transforms, even if the dataset has some: evaluation sees original pixels
            image = to_uint8_tensor(self.dataset.load_image(index))
            target = self.dataset.get_annotation(index)
        except ValueError as e:
            if self.strict:
                raise
            return _Loaded(None, None, [_Failure(self.dataset.image_path(index), str(e))])
        return _Loaded(image, target, [])


def _collate_test(items: Sequence[_Loaded]) -> tuple[list[torch.Tensor], list[dict[str, Any]],
                                                        list[_Failure]]:
    ok = [(it.image, it.target) for it in items if it.image is not None]
    images, targets = collate_detection(ok)
    return images, targets, [f for it in items for f in it.failures]


class TestLoader:
    """Iterable of ``(images, targets)`` over this rank's shard, in dataset order: uint8
    Tensor[3, H, W] images and targets in original pixels (no transforms). Images that fail
    to load are logged and left out (their ground truth still counts in evaluation), or raise
    with ``strict=True``."""

    __test__ = False  # not a pytest class

    def __init__(
        self, dataset: DetectionDataset, images_per_batch: int, *, num_workers: int, rank: int,
        world_size: int, strict: bool, pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.indices = shard_range(len(dataset), rank, world_size)
        self._failures = _FailureLog()
        self._loader = DataLoader(
            _TestSamples(dataset, strict),  # type: ignore[arg-type]
            batch_size=images_per_batch,
            sampler=list(self.indices),
            collate_fn=_collate_test,
            num_workers=num_workers,
            pin_memory=pin_memory,
            worker_init_fn=partial(_init_worker, 0) if num_workers > 0 else None,
            generator=torch.Generator().manual_seed(0),
        )

    @property
    def num_skipped(self) -> int:
        return self._failures.count

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict[str, Any]]]]:
        for images, targets, failures in iterate_forked(self._loader):
            self._failures.log(failures)
            if images:
                yield images, targets


def build_test_loader(
    dataset: DetectionDataset,
    images_per_batch: int = 1,
    *,
    num_workers: int = 2,
    rank: int = 0,
    world_size: int = 1,
    strict: bool = False,
    pin_memory: bool = False,
) -> TestLoader:
    """Loader over this rank's contiguous shard; shards of all ranks cover each image once.

    Yields ``(images, targets)``: uint8 Tensor[3, H, W] images in original pixels (no
    transforms) and their targets; ``pin_memory`` as for `build_train_loader`.
    """
    return TestLoader(dataset, images_per_batch, num_workers=num_workers, rank=rank,
                      world_size=world_size, strict=strict, pin_memory=pin_memory)
