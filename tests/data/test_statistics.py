"""Dataset statistics from annotations: counts, percentiles against numpy, degenerate data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from data_builders import good_coco_dataset

from rfcn.data.coco import CocoDetection
from rfcn.data.statistics import (
    LOG2_ASPECT_EDGES,
    PERCENTILES,
    REL_SIZE_EDGES,
    SIDE_PX_EDGES,
    dataset_statistics,
    format_statistics,
)


class FakeDataset:
    """Annotations only; ``load_image`` would fail, so decoding would be noticed."""

    def __init__(self, anns: list[dict[str, Any]], class_names: list[str]) -> None:
        self.anns = anns
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.anns)

    def get_annotation(self, index: int) -> dict[str, Any]:
        return self.anns[index]

    def load_image(self, index: int) -> np.ndarray:
        raise AssertionError("statistics must not decode images")


def _random_dataset(rng: np.random.Generator, num_images: int, max_boxes: int) -> FakeDataset:
    anns = []
    for _ in range(num_images):
        h, w = int(rng.integers(100, 900)), int(rng.integers(100, 900))
        m = int(rng.integers(0, max_boxes + 1))
        x1, y1 = rng.uniform(0, w - 20, m), rng.uniform(0, h - 20, m)
        x2 = np.minimum(x1 + rng.uniform(1, 400, m), w)
        y2 = np.minimum(y1 + rng.uniform(1, 400, m), h)
        anns.append({
            "boxes": torch.tensor(np.stack([x1, y1, x2, y2], 1), dtype=torch.float32),
            "labels": torch.from_numpy(rng.integers(1, 4, m)),
            "iscrowd": torch.from_numpy(rng.random(m) < 0.1),
            "difficult": torch.from_numpy(rng.random(m) < 0.05),
            "orig_size": (h, w),
        })
    return FakeDataset(anns, ["__background__", "a", "b", "c"])


def test_arrays_counts_and_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    ds = _random_dataset(rng, 60, 12)
    stats = dataset_statistics(ds)
    boxes = np.concatenate([a["boxes"].double().numpy() for a in ds.anns])
    labels = np.concatenate([a["labels"].numpy() for a in ds.anns])
    crowd = np.concatenate([a["iscrowd"].numpy() for a in ds.anns])
    difficult = np.concatenate([a["difficult"].numpy() for a in ds.anns])
    image_hw = np.concatenate([np.tile(a["orig_size"], (len(a["labels"]), 1)) for a in ds.anns])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]

    assert stats.num_images == 60 and stats.num_boxes == len(labels)
    np.testing.assert_allclose(stats.widths, w)
    np.testing.assert_allclose(stats.heights, h)
    np.testing.assert_allclose(stats.aspect_ratios, h / w)
    np.testing.assert_allclose(stats.rel_widths, w / image_hw[:, 1])
    np.testing.assert_allclose(stats.rel_heights, h / image_hw[:, 0])
    np.testing.assert_allclose(stats.rel_sizes, np.sqrt(w * h / (image_hw[:, 0] * image_hw[:, 1])))
    assert stats.boxes_per_class == {n: int((labels == i + 1).sum())
                                     for i, n in enumerate(["a", "b", "c"])}
    assert stats.num_images_without_boxes == sum(len(a["labels"]) == 0 for a in ds.anns)

    d = stats.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["num_crowd"] == crowd.sum() and d["num_difficult"] == difficult.sum()
    kept = ~(crowd | difficult)
    assert d["num_boxes_kept"] == kept.sum()
    want = np.percentile(np.sqrt(w * h)[kept], PERCENTILES)
    got = [d["percentiles"]["box_sqrt_area_px"][f"p{q}"] for q in PERCENTILES]
    np.testing.assert_allclose(got, want)
    sizes = np.array([a["orig_size"] for a in ds.anns])
    np.testing.assert_allclose(
        [d["percentiles"]["image_short_side"][f"p{q}"] for q in PERCENTILES],
        np.percentile(sizes.min(1), PERCENTILES))
    np.testing.assert_allclose(
        [d["percentiles"]["image_long_side"][f"p{q}"] for q in PERCENTILES],
        np.percentile(sizes.max(1), PERCENTILES))

    hist = d["histograms"]
    assert hist["box_side_px"]["edges"] == SIDE_PX_EDGES.tolist()
    assert hist["box_rel_size"]["edges"] == REL_SIZE_EDGES.tolist()
    assert hist["log2_aspect_ratio"]["edges"] == LOG2_ASPECT_EDGES.tolist()
    for counts in (hist["box_side_px"]["sqrt_area"], hist["box_side_px"]["width"],
                   hist["box_rel_size"]["sqrt_area"], hist["log2_aspect_ratio"]["counts"]):
        assert sum(counts) == kept.sum()  # outside values go to the end bins
    want_aspect, _ = np.histogram(np.clip(np.log2(h / w)[kept], -4, 4), LOG2_ASPECT_EDGES)
    assert hist["log2_aspect_ratio"]["counts"] == want_aspect.tolist()


def test_scaled_box_sizes_follow_the_model_resize() -> None:
    ds = FakeDataset([
        {"boxes": torch.tensor([[0, 0, 40, 20]]), "labels": torch.tensor([1]),
         "orig_size": (200, 400)},
        {"boxes": torch.tensor([[0, 0, 10, 10]]), "labels": torch.tensor([1]),
         "orig_size": (100, 1000)},
    ], ["__background__", "x"])
    stats = dataset_statistics(ds)
    # image 0: shorter 200 -> 600 (x3), longer 1200 <= 1333; image 1: capped by 1333 / 1000
    np.testing.assert_allclose(stats.scaled_box_sizes(600, 1333), [[120, 60], [13.33, 13.33]])


def test_coco_dataset_in_tmp_path(tmp_path: Path) -> None:
    sizes = [(40, 60), (50, 30), (32, 32), (48, 64), (20, 80)]
    img_dir, ann = good_coco_dataset(tmp_path, sizes)
    ds = CocoDetection(img_dir, ann)
    stats = dataset_statistics(ds)
    assert stats.num_images == 5 and stats.num_boxes == 5
    assert stats.boxes_per_class == {"a": 3, "b": 2}
    assert int(stats.iscrowd.sum()) == 1  # the fifth box
    np.testing.assert_array_equal(stats.image_sizes, sizes)
    np.testing.assert_allclose(stats.widths, [w // 2 for _, w in sizes])
    np.testing.assert_allclose(stats.heights, [h // 2 for h, _ in sizes])
    assert stats.num_images_without_kept_boxes == 1
    text = format_statistics(stats, ds.bad_records)
    assert "images: 5" in text and "records dropped" in text


def test_empty_dataset() -> None:
    stats = dataset_statistics(FakeDataset([], ["__background__", "a"]))
    assert stats.num_images == 0 and stats.num_boxes == 0
    d = stats.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["boxes_per_class"] == {"a": 0}
    assert all(v is None for v in d["percentiles"]["box_sqrt_area_px"].values())
    assert all(v is None for v in d["percentiles"]["image_short_side"].values())
    assert sum(d["histograms"]["box_side_px"]["sqrt_area"]) == 0
    text = format_statistics(stats, None)
    assert "images: 0" in text and "dropped" not in text


def test_images_without_boxes_and_report() -> None:
    ds = FakeDataset([
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "orig_size": (10, 10)},
        {"boxes": torch.tensor([[0.0, 0.0, 5.0, 8.0]]), "labels": torch.tensor([2]),
         "iscrowd": torch.tensor([True]), "orig_size": (10, 20)},
    ], ["__background__", "cat", "dog"])
    stats = dataset_statistics(ds)
    assert stats.num_images_without_boxes == 1
    assert stats.num_images_without_kept_boxes == 2
    assert stats.boxes_per_class == {"cat": 0, "dog": 1}
    text = format_statistics(stats, {"boxes with zero or negative size dropped": 3,
                                     "annotations with unknown image_id dropped": 2})
    assert "1 without boxes" in text
    assert "records dropped or fixed by the reader: 5" in text
    assert "3  boxes with zero or negative size dropped" in text
    assert "dog" in text and "cat" in text


def test_bad_annotations_raise() -> None:
    bad_label = {"boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]), "labels": torch.tensor([3]),
                 "orig_size": (5, 5)}
    with pytest.raises(ValueError, match="labels"):
        dataset_statistics(FakeDataset([bad_label], ["__background__", "a"]))
    no_size = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.raises(ValueError, match="orig_size"):
        dataset_statistics(FakeDataset([no_size], ["__background__", "a"]))


def test_fast_on_100k_boxes() -> None:
    ds = _random_dataset(np.random.default_rng(0), 1000, 200)
    start = time.perf_counter()
    stats = dataset_statistics(ds)
    stats.to_dict()
    assert stats.num_boxes > 90_000
    assert time.perf_counter() - start < 10.0  # about 0.2 s on one core


class _TableDataset:
    """A reader with `record_table()` (like CocoDetection / VOCDetection)."""

    def __init__(self, table: Any, class_names: list[str]) -> None:
        self.table, self.class_names = table, class_names

    def __len__(self) -> int:
        return len(self.table)

    def record_table(self) -> Any:
        return self.table

    def get_annotation(self, index: int) -> dict[str, Any]:
        return self.table.target(index)


def test_record_columns_give_the_per_image_statistics() -> None:
    from rfcn.data.records import RecordTable

    rng = np.random.default_rng(3)
    fake = _random_dataset(rng, 60, 7)  # includes images without boxes
    owner = np.concatenate([np.full(len(a["labels"]), i) for i, a in enumerate(fake.anns)])
    table = RecordTable.build(
        [f"{i}.jpg" for i in range(len(fake))], range(len(fake)),
        [a["orig_size"][0] for a in fake.anns], [a["orig_size"][1] for a in fake.anns],
        owner, np.concatenate([a["boxes"].numpy() for a in fake.anns]),
        np.concatenate([a["labels"].numpy() for a in fake.anns]),
        np.concatenate([a["iscrowd"].numpy() for a in fake.anns]),
        np.concatenate([a["difficult"].numpy() for a in fake.anns]))
    fast = dataset_statistics(_TableDataset(table, fake.class_names))
    slow = dataset_statistics(fake)
    assert fast.to_dict() == slow.to_dict()
    for name in ("image_sizes", "box_image", "box_wh", "box_labels", "iscrowd", "difficult"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
    bad = RecordTable.build(["a.jpg", "b.jpg"], [1, 2], [9, 9], [9, 9], np.array([0, 1]),
                            np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32),
                            np.array([1, 5]), np.zeros(2, bool), np.zeros(2, bool))
    with pytest.raises(ValueError, match=r"annotation 1: labels must be in 1\.\.3"):
        dataset_statistics(_TableDataset(bad, fake.class_names))
