"""Measurements of the data pipeline at COCO size (scripts/bench_data.py prints them).

Every measurement runs in a fresh child process (`run_isolated`), so its memory numbers are
its own: "retained" is the RSS / PSS a process holds after the step (and a garbage
collection) minus what it held before, with torch and the readers already imported.

Rows:
- `construction`: building the annotation index: ``pycocotools.COCO(ann_file)``,
  `CocoDetection` cold (parse and write the cache) and warm (from the cache), and the
  evaluation index ``dataset.coco``.
- `annotation_epoch`: one (forked) loader worker reads the annotations of every image once
  (no decoding); its Private_Dirty growth is the copy-on-write cost of the records over an epoch,
  also after a ``gc.collect()`` in the worker (which writes every tracked object's header).
- `loader_throughput`: images/s of the training loader with N workers (decode, resize to the
  training size, flip), the process tree's PSS (main + workers) while it runs, and the bytes
  of one image as the workers hand it over.
- `decode_floor`: the same decode + resize with bare OpenCV in one process: the floor the
  loader's per-process rate is compared with.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from rfcn.data.coco import CocoDetection
from rfcn.data.loader import build_train_loader
from rfcn.data.process_memory import memory_of, peak_rss, tree_memory
from rfcn.data.transforms import build_train_transforms, resize_scale

__all__ = ["annotation_epoch", "construction", "decode_floor", "loader_throughput",
           "run_isolated"]

T = TypeVar("T")
CONSTRUCTIONS = ("pycocotools", "cold", "warm", "eval_index")


def run_isolated(fn: Callable[..., T], *args: Any, start_method: str = "spawn") -> T:
    """``fn(*args)`` in a fresh child process ("spawn": nothing inherited; "fork": faster
    start, for smoke runs) and its result."""
    ctx = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _fork_workers() -> None:
    """Loader workers fork from this process, as in a training process on Linux. (A process
    started by "spawn" would otherwise start its own children by spawn too: workers that
    import everything again and get a pickled copy of the dataset.)"""
    multiprocessing.set_start_method("fork", force=True)


def construction(kind: str, img_dir: str, ann_file: str, cache_dir: str) -> dict[str, float]:
    """Seconds and retained memory of one way to build the annotation index (`CONSTRUCTIONS`;
    "cold" expects an empty ``cache_dir``)."""
    from pycocotools.coco import COCO

    dataset = CocoDetection(img_dir, ann_file, cache_dir=cache_dir) \
        if kind == "eval_index" else None
    gc.collect()
    before = memory_of()
    start = time.perf_counter()
    if kind == "pycocotools":
        with contextlib.redirect_stdout(io.StringIO()):
            kept: Any = COCO(ann_file)
    elif kind in ("cold", "warm"):
        kept = CocoDetection(img_dir, ann_file, cache_dir=cache_dir)
    elif kind == "eval_index":
        kept = dataset.coco  # type: ignore[union-attr]
    else:
        raise ValueError(f"unknown construction {kind!r}; one of {CONSTRUCTIONS}")
    seconds = time.perf_counter() - start
    gc.collect()
    after = memory_of()
    del kept
    return {"seconds": seconds, "rss": after.rss - before.rss, "pss": after.pss - before.pss,
            "process_rss": after.rss, "peak_rss": peak_rss()}


class _Annotations:
    """Map-style dataset over the targets only; a negative index runs ``gc.collect()``."""

    def __init__(self, dataset: CocoDetection) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> int:
        if index < 0:
            gc.collect()
            return 0
        return len(self.dataset.get_annotation(index)["boxes"])


def _count(batch: list[int]) -> int:
    return sum(batch)


def _worker_pid() -> int:
    """The loader worker: this process's child (the largest, should there be others)."""
    _, each = tree_memory()
    children = [p for p in each if p != os.getpid()]
    if not children:
        raise RuntimeError("no loader worker process found")
    return max(children, key=lambda p: each[p].pss)


def annotation_epoch(img_dir: str, ann_file: str, cache_dir: str) -> dict[str, float]:
    """Private_Dirty growth of one worker that reads every image's annotations once, before
    and after a ``gc.collect()`` in that worker."""
    dataset = CocoDetection(img_dir, ann_file, cache_dir=cache_dir)
    n = len(dataset)
    order = [-2, *range(n), -1]  # -2: a first item so the worker is up before measuring
    batches = [order[:1], *(order[i:i + 512] for i in range(1, n + 1, 512)), order[-1:]]
    loader = DataLoader(_Annotations(dataset), batch_sampler=batches, num_workers=1,
                        collate_fn=_count, prefetch_factor=1, persistent_workers=True,
                        multiprocessing_context="fork")
    it = iter(loader)
    next(it)  # the -2 item: gc.collect() once, so its own effect is not counted below
    worker = _worker_pid()
    start = memory_of(worker)
    t0 = time.perf_counter()
    boxes = sum(islice(it, len(batches) - 2))
    seconds = time.perf_counter() - t0
    epoch = memory_of(worker)
    next(it)  # gc.collect() in the worker
    collected = memory_of(worker)
    del it, loader
    return {"images": n, "boxes": boxes, "seconds": seconds,
            "start_private": start.private_dirty,
            "growth": epoch.private_dirty - start.private_dirty,
            "growth_after_gc": collected.private_dirty - start.private_dirty}


def loader_throughput(img_dir: str, ann_file: str, cache_dir: str, num_workers: int,
                      images_per_batch: int, num_batches: int, min_size: int,
                      max_size: int) -> dict[str, float]:
    """images/s of ``num_batches`` training batches after a warm-up batch from every worker
    (each has started), the process tree's PSS (main + workers) after the warm-up and at
    the end, bytes per image."""
    _fork_workers()
    dataset = CocoDetection(img_dir, ann_file, cache_dir=cache_dir)
    tf = build_train_transforms([min_size], max_size, flip_prob=0.5)
    loader = build_train_loader(dataset, images_per_batch, seed=0, num_workers=num_workers,
                                transforms=tf)
    it = iter(loader)
    first = next(it)
    for _ in range(num_workers - 1):
        next(it)
    start_mem, _ = tree_memory()
    t0 = time.perf_counter()
    images = 0
    for batch in islice(it, num_batches):
        images += len(batch.images)
    seconds = time.perf_counter() - t0
    end_mem, each = tree_memory()
    image = first.images[0]
    return {"images_per_s": images / seconds, "images": images,
            "tree_pss_start": start_mem.pss, "tree_pss_end": end_mem.pss,
            "processes": len(each), "bytes_per_image": image.numel() * image.element_size(),
            "dtype": str(image.dtype).replace("torch.", ""),
            "float32_bytes_per_image": image.numel() * 4}


def decode_floor(paths: list[str], min_size: int, max_size: int) -> dict[str, float]:
    """images/s of bare ``cv2.imread`` + ``cv2.resize`` to the training size, one process."""
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    pixels = 0
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        scale = resize_scale(h, w, min_size, max_size)
        img = cv2.resize(img, (round(w * scale), round(h * scale)),
                         interpolation=cv2.INTER_LINEAR)
        pixels += int(np.prod(img.shape[:2]))
    seconds = time.perf_counter() - t0
    return {"images_per_s": len(paths) / seconds, "images": len(paths), "pixels": pixels}
