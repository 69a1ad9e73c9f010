from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import good_coco_dataset
from torch.utils.data import DataLoader, Dataset

from rfcn.data import CocoDetection, TrainBatch, build_test_loader, build_train_loader
from rfcn.data.loader import iterate_forked
from rfcn.data.process_memory import memory_of
from rfcn.data.transforms import build_train_transforms

# 6 landscape and 4 portrait images
SIZES = [(16, 24)] * 6 + [(24, 16)] * 4
TF = build_train_transforms([16, 20, 32], 64, flip_prob=0.5, color_jitter=0.3)


@pytest.fixture(scope="module")
def good_ds(tmp_path_factory) -> CocoDetection:
    img_dir, ann = good_coco_dataset(tmp_path_factory.mktemp("good"), SIZES)
    return CocoDetection(img_dir, ann)


def take(loader, n: int) -> list[TrainBatch]:
    return list(islice(loader, n))


def assert_same(a: list[TrainBatch], b: list[TrainBatch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert len(x.images) == len(y.images)
        for ia, ib in zip(x.images, y.images, strict=True):
            assert torch.equal(ia, ib)
        for ta, tb in zip(x.targets, y.targets, strict=True):
            assert ta["image_id"] == tb["image_id"]
            assert torch.equal(ta["boxes"], tb["boxes"])
            assert torch.equal(ta["labels"], tb["labels"])
        assert x.skipped == y.skipped


def test_deterministic_and_resumable(good_ds) -> None:
    full = take(build_train_loader(good_ds, 2, seed=7, num_workers=0, transforms=TF), 9)
    again = take(build_train_loader(good_ds, 2, seed=7, num_workers=0, transforms=TF), 9)
    assert_same(full, again)
    resumed = take(build_train_loader(good_ds, 2, seed=7, start_iter=6, num_workers=0,
                                      transforms=TF), 3)
    assert_same(full[6:], resumed)
    other = take(build_train_loader(good_ds, 2, seed=8, num_workers=0, transforms=TF), 9)
    assert [t["image_id"] for b in other for t in b.targets] != [
        t["image_id"] for b in full for t in b.targets]
    sizes = {tuple(im.shape[1:]) for b in full for im in b.images}
    assert len(sizes) > 2  # multi-scale happened


def test_workers_do_not_change_results(good_ds) -> None:
    ref = take(build_train_loader(good_ds, 2, seed=3, start_iter=4, num_workers=0,
                                  transforms=TF), 6)
    par = take(build_train_loader(good_ds, 2, seed=3, start_iter=4, num_workers=2,
                                  transforms=TF), 6)
    assert_same(ref, par)


def test_two_ranks_equal_one_process_with_double_batch(good_ds) -> None:
    single = take(build_train_loader(good_ds, 4, seed=1, num_workers=0, transforms=TF), 5)
    r0 = take(build_train_loader(good_ds, 2, seed=1, num_workers=0, transforms=TF, rank=0,
                                 world_size=2), 5)
    r1 = take(build_train_loader(good_ds, 2, seed=1, num_workers=0, transforms=TF, rank=1,
                                 world_size=2), 5)
    merged = [TrainBatch(a.images + b.images, a.targets + b.targets, a.skipped + b.skipped)
              for a, b in zip(r0, r1, strict=True)]
    assert_same(single, merged)


def test_aspect_grouping_and_ignored_boxes_dropped(good_ds) -> None:
    batches = take(build_train_loader(good_ds, 2, seed=0, num_workers=0), 25)
    for b in batches:
        orientations = {im.shape[2] >= im.shape[1] for im in b.images}
        assert len(orientations) == 1
        for t in b.targets:
            assert not t["iscrowd"].any() and not t["difficult"].any()
            assert len(t["boxes"]) == len(t["labels"]) == len(t["iscrowd"])
    # image ids 5 and 10 carry only a crowd box: they train as background
    crowd_only = [t for b in batches for t in b.targets if t["image_id"] in (5, 10)]
    assert crowd_only and all(len(t["boxes"]) == 0 for t in crowd_only)


def test_global_torch_rng_untouched(good_ds) -> None:
    state = torch.get_rng_state()
    for nw in (0, 2):
        take(build_train_loader(good_ds, 2, seed=0, num_workers=nw, transforms=TF), 2)
    assert torch.equal(state, torch.get_rng_state())


def test_bad_files_skipped_logged_and_counted(coco_files, caplog) -> None:
    ds = CocoDetection(coco_files["img_dir"], coco_files["ann_file"])
    bad = {"truncated.jpg", "notimage.jpg", "missing.jpg", "wrongsize.png"}
    loader = build_train_loader(ds, 2, seed=0, num_workers=0, aspect_grouping=False)
    with caplog.at_level(logging.WARNING, logger="rfcn.data"):
        batches = take(loader, 15)
    skipped = [Path(p).name for b in batches for p in b.skipped]
    assert skipped and set(skipped) <= bad
    assert loader.num_skipped == len(skipped)
    assert all(len(b.images) == 2 for b in batches)  # substitutes keep batches full
    logged = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in set(skipped):
        assert name in logged
    # same substitutes whatever the worker count
    par = take(build_train_loader(ds, 2, seed=0, num_workers=2, aspect_grouping=False), 15)
    assert_same(batches, par)


def test_group_of_only_bad_files_borrows_from_the_other(tmp_path: Path) -> None:
    img_dir, ann = good_coco_dataset(tmp_path, [(16, 24)] * 3 + [(24, 16)] * 3)
    for i in (3, 4, 5):  # every portrait image is broken
        (img_dir / f"{i}.png").write_bytes(b"junk")
    ds = CocoDetection(img_dir, ann)
    batches = take(build_train_loader(ds, 3, seed=0, num_workers=0), 6)
    assert all(len(b.images) == 3 for b in batches)
    assert any(b.skipped for b in batches)


def test_strict_raises(coco_files) -> None:
    ds = CocoDetection(coco_files["img_dir"], coco_files["ann_file"])
    loader = build_train_loader(ds, 10, seed=0, num_workers=0, strict=True)
    with pytest.raises(ValueError, match=r"\.(jpg|png)"):
        take(loader, 3)


def test_all_bad_dataset_raises_clear_error(tmp_path: Path) -> None:
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"gone{i}.jpg", "width": 8, "height": 8}
                   for i in range(3)],
        "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    ds = CocoDetection(tmp_path, ann)
    for nw in (0, 2):
        loader = build_train_loader(ds, 2, seed=0, num_workers=nw)
        with pytest.raises(RuntimeError, match=r"iteration 0: none of the 100 attempts .*"
                                               r"\(3 distinct files .*unreadable.*gone\d\.jpg"):
            next(iter(loader))


def test_test_loader_shards_cover_each_image_once(good_ds, coco_files, caplog) -> None:
    seen = []
    for rank in range(3):
        loader = build_test_loader(good_ds, 2, num_workers=0, rank=rank, world_size=3)
        for images, targets in loader:
            assert len(images) == len(targets)
            for im, t in zip(images, targets, strict=True):
                assert tuple(im.shape[1:]) == t["orig_size"]
                seen.append(t["image_id"])
    assert sorted(seen) == good_ds.image_ids
    par = [t["image_id"] for _, ts in build_test_loader(good_ds, 3, num_workers=2)
           for t in ts]
    assert par == good_ds.image_ids
    # the dataset's own (training) transforms are not applied for testing
    with_tf = CocoDetection(good_ds.img_dir, good_ds.ann_file, transforms=TF)
    for images, targets in build_test_loader(with_tf, 4, num_workers=0):
        for im, t in zip(images, targets, strict=True):
            assert tuple(im.shape[1:]) == t["orig_size"]

    bad_ds = CocoDetection(coco_files["img_dir"], coco_files["ann_file"])
    with caplog.at_level(logging.WARNING, logger="rfcn.data"):
        ids = [t["image_id"] for _, ts in build_test_loader(bad_ds, 2, num_workers=0)
               for t in ts]
    assert ids == [1, 2, 3, 4, 5, 6]
    assert "truncated.jpg" in caplog.text
    with pytest.raises(ValueError, match="truncated"):
        list(build_test_loader(bad_ds, 2, num_workers=0, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loaders_hand_back_uint8_images(good_ds, num_workers: int) -> None:
    """Workers send uint8 Tensor[3, H, W] (a quarter of float32's bytes); the pixels are the
    dataset's: ``ds[i]`` (float32 in [0, 1]) is the same image divided by 255."""
    batch = next(iter(build_train_loader(good_ds, 2, seed=0, num_workers=num_workers,
                                         transforms=TF)))
    assert batch.images and all(im.dtype == torch.uint8 and im.dim() == 3 and
                                im.shape[0] == 3 for im in batch.images)
    images, targets = next(iter(build_test_loader(good_ds, 2, num_workers=num_workers)))
    for im, t in zip(images, targets, strict=True):
        # a view of the decoded H x W x 3 memory (no copy); the model lays it out as it converts
        assert im.dtype == torch.uint8 and im.permute(1, 2, 0).is_contiguous()
        index = good_ds.image_ids.index(t["image_id"])
        assert torch.equal(im.to(torch.float32).div_(255.0), good_ds[index][0])


def test_pin_memory_option(good_ds) -> None:
    loader = build_train_loader(good_ds, 2, seed=0, num_workers=0, pin_memory=True)
    test_loader = build_test_loader(good_ds, 2, num_workers=0, pin_memory=True)
    assert loader._loader.pin_memory and test_loader._loader.pin_memory
    assert not build_test_loader(good_ds, 2, num_workers=0)._loader.pin_memory  # default off
    if not torch.cuda.is_available():
        return  # pinning needs a CUDA device; without one the batches are the same
    batch = next(iter(loader))
    images, _ = next(iter(test_loader))
    assert all(im.is_pinned() for im in batch.images + images)


def _private_dirty_kib() -> int:
    return int(memory_of().private_dirty) // 1024


class _CollectInWorker(Dataset):
    """Its one item: the worker's private memory growth (KiB) over a full gc.collect()."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        before = _private_dirty_kib()
        gc.collect()
        return _private_dirty_kib() - before


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc")
def test_a_collection_in_a_worker_copies_none_of_the_parents_objects() -> None:
    heap = [{"i": i} for i in range(200_000)]  # tens of MiB of objects the workers inherit
    frozen = next(iterate_forked(DataLoader(_CollectInWorker(), batch_size=None,
                                            num_workers=1)))
    plain = next(iter(DataLoader(_CollectInWorker(), batch_size=None, num_workers=1)))
    assert plain > 20_000 and frozen < 5_000, (plain, frozen)
    assert len(heap) == 200_000 and gc.isenabled() and gc.get_freeze_count() == 0


class _WorkerRss(Dataset):
    """Its one item: the worker's resident memory (KiB) just after it forked."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return int(memory_of().rss) // 1024


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc")
def test_workers_fork_without_the_parents_free_heap() -> None:
    import ctypes.util
    libc = ctypes.util.find_library("c")
    if not libc or not hasattr(ctypes.CDLL(libc), "malloc_trim"):
        pytest.skip("glibc's malloc_trim")
    # ~96 MiB of 64 KiB blocks on the C heap (below malloc's mmap threshold), all freed but
    # the last: the heap keeps the freed pages resident (as after a training step's
    # activations), and a worker forked then would share them
    blocks = [np.ones(64 * 1024, np.uint8) for _ in range(1536)]
    keep = blocks[-1]
    del blocks
    plain = next(iter(DataLoader(_WorkerRss(), batch_size=None, num_workers=1)))
    trimmed = next(iterate_forked(DataLoader(_WorkerRss(), batch_size=None, num_workers=1)))
    assert plain - trimmed > 48 * 1024, (plain, trimmed)
    assert keep.sum() == 64 * 1024


_EXIT_SCRIPT = """
import sys
from rfcn.data import CocoDetection, build_test_loader, build_train_loader
ds = CocoDetection(sys.argv[1], sys.argv[2])
train = iter(build_train_loader(ds, 2, seed=0, num_workers=2))
batch = next(train)
test = iter(build_test_loader(ds, 1, num_workers=1))
next(test)
print("batch", len(batch.images), flush=True)
if sys.argv[3] == "raise":
    raise RuntimeError("a crash with the loaders' workers still running")
"""


@pytest.mark.parametrize("how", ["return", "raise"])
def test_a_process_exits_with_its_loaders_workers_still_running(tmp_path: Path,
                                                                how: str) -> None:
    """Workers ignore SIGTERM (the main process handles it), so multiprocessing's exit hook
    cannot terminate them: a script that leaves a loader iterator alive, or dies of an
    uncaught exception while its traceback holds one, must still end (it used to hang)."""
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_SCRIPT)
    img_dir, ann = good_coco_dataset(tmp_path / "data", SIZES)
    r = subprocess.run([sys.executable, str(script), str(img_dir), str(ann), how],
                       capture_output=True, text=True, timeout=120)
    assert "batch 2" in r.stdout, r.stderr[-2000:]
    assert r.returncode == (0 if how == "return" else 1), r.stderr[-2000:]
