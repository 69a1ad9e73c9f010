"""Compact records (issue 21): a dataset holds numpy columns, not one Python object per image or
box; the pycocotools index for evaluation is built only when asked for, without segmentation."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import rfcn.data.coco as coco_module
from rfcn.data import CocoDetection
from rfcn.data.records import RecordTable
from rfcn.data.synthetic_coco import write_coco_size_annotations


def _json_only(path: Path, num_images: int) -> Path:
    """A clean COCO file of ``num_images`` images with 3 boxes each (no image files)."""
    images = [{"id": i + 1, "file_name": f"{i:06d}.jpg", "width": 40 + i % 7, "height": 30}
              for i in range(num_images)]
    anns = [{"id": 3 * i + k + 1, "image_id": i + 1, "category_id": 1 + k % 2,
             "bbox": [k, 1, 5 + k, 4], "area": 20, "iscrowd": 0,
             "segmentation": [[k, 1, k + 5, 1, k + 5, 5]]}
            for i in range(num_images) for k in range(3)]
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return path


_LEAVES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, np.ndarray)


def _reachable_objects(root: object) -> int:
    """Python objects reachable from ``root`` (numpy arrays count as one, their elements are
    not objects; classes, modules and functions are not followed)."""
    seen = {id(root)}
    todo = [root]
    while todo:
        obj = todo.pop()
        if isinstance(obj, _LEAVES):
            continue
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, type | types.ModuleType):
                seen.add(id(ref))
                todo.append(ref)
    return len(seen)


def test_records_are_numpy_columns(tmp_path: Path) -> None:
    ds = CocoDetection(tmp_path, _json_only(tmp_path / "ann.json", 400))
    n = len(ds)
    assert n == 400
    table = ds._table
    assert isinstance(table, RecordTable)
    assert all(isinstance(v, np.ndarray) for v in vars(table).values())
    assert table.boxes.dtype == np.float32 and table.boxes.shape == (1200, 4)
    assert table.labels.dtype == np.int64 and table.box_offsets.dtype == np.int64
    assert table.iscrowd.dtype == bool and table.name_bytes.dtype == np.uint8
    for name, value in vars(ds).items():
        if isinstance(value, list | tuple | dict | set):
            assert len(value) < n, f"{name} holds {len(value)} Python objects"
    # same records as the file says
    t = ds.get_annotation(7)
    assert t["image_id"] == 8 and t["orig_size"] == (30, 40)
    assert t["boxes"].tolist() == [[0, 1, 5, 5], [1, 1, 7, 5], [2, 1, 9, 5]]
    assert t["labels"].tolist() == [1, 2, 1]
    assert ds.image_path(7) == str(tmp_path / "000007.jpg")


def test_python_objects_do_not_grow_with_the_dataset(tmp_path: Path) -> None:
    small = CocoDetection(tmp_path, _json_only(tmp_path / "small.json", 20))
    large = CocoDetection(tmp_path, _json_only(tmp_path / "large.json", 2000))
    n_small, n_large = _reachable_objects(small), _reachable_objects(large)
    assert n_large == n_small  # independent of the number of images and boxes
    assert n_large < 300


def test_evaluation_index_is_lazy_cached_and_released(tmp_path: Path, monkeypatch) -> None:
    built = []
    real = coco_module.COCO

    def counting_coco(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(coco_module, "COCO", counting_coco)
    ds = CocoDetection(tmp_path, _json_only(tmp_path / "ann.json", 10))
    assert not built and ds._coco is None  # nothing built at construction
    gt = ds.coco
    assert ds.coco is gt and len(built) == 1  # built once, then kept
    assert sorted(gt.getImgIds()) == ds.image_ids
    assert len(gt.getAnnIds()) == 30
    ds.release_coco()
    assert ds._coco is None
    assert ds.coco is not gt and len(built) == 2  # rebuilt when used again
    # a pickled dataset (spawned workers) carries the columns, not the index
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._coco is None and clone.get_annotation(3)["boxes"].tolist() == \
        ds.get_annotation(3)["boxes"].tolist()


def test_evaluation_index_has_no_segmentation_and_scores_like_pycocotools(
        tmp_path: Path) -> None:
    syn = write_coco_size_annotations(tmp_path, num_images=60, num_annotations=400,
                                      crowd_fraction=0.1, num_jpegs=2)
    ds = CocoDetection(syn.image_dir, syn.ann_file)
    gt = ds.coco
    anns = gt.dataset["annotations"]
    assert anns and all("segmentation" not in a for a in anns)
    assert set(anns[0]) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
    crowd = [a for a in anns if a["iscrowd"]]
    assert crowd and all(len(a["bbox"]) == 4 for a in crowd)  # crowd RLE keeps its box
    with contextlib.redirect_stdout(io.StringIO()):
        full = COCO(str(syn.ann_file))  # with polygons and RLE, as pycocotools reads it
    rng = np.random.default_rng(0)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"],
             "bbox": (np.asarray(a["bbox"]) + rng.normal(0, 3, 4)).tolist(),
             "score": float(rng.random())} for a in full.dataset["annotations"]]
    stats = []
    for ground_truth in (gt, full):
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(ground_truth, ground_truth.loadRes([dict(d) for d in dets]), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats.append(ev.stats)
    assert 0.05 < stats[1][0] < 0.95  # a non-trivial score
    np.testing.assert_array_equal(stats[0], stats[1])


@pytest.mark.parametrize("num_images", [0, 1])
def test_degenerate_sizes(tmp_path: Path, num_images: int) -> None:
    ds = CocoDetection(tmp_path, _json_only(tmp_path / "ann.json", num_images))
    assert len(ds) == num_images and ds.image_ids == list(range(1, num_images + 1))
    assert len(ds.coco.getImgIds()) == num_images


def test_evaluation_ground_truth_is_the_cleaned_file(coco_files) -> None:
    """The annotations COCOeval sees, as the reader gave them before compact records (ids
    renumbered where missing, clipped boxes recomputed, the file's area kept, w*h where it has
    none, crowd kept, every bad record dropped)."""
    ds = CocoDetection(coco_files["img_dir"], coco_files["ann_file"])
    assert ds.coco.dataset["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 8, 20, 20], "area": 400,
         "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 30, 10, 10], "area": 100,
         "iscrowd": 1},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [50, 40, 14, 8], "area": 900,
         "iscrowd": 0},
        {"id": 11, "image_id": 3, "category_id": 3, "bbox": [5, 5, 20, 45], "area": 900,
         "iscrowd": 0},
        {"id": 12, "image_id": 4, "category_id": 7, "bbox": [1, 1, 10, 10], "area": 100,
         "iscrowd": 0},
        {"id": 13, "image_id": 7, "category_id": 7, "bbox": [1, 1, 10, 10], "area": 100,
         "iscrowd": 0},
        {"id": 14, "image_id": 5, "category_id": 7, "bbox": [2, 2, 10, 10], "area": 100,
         "iscrowd": 0},
    ]
    assert [im["id"] for im in ds.coco.dataset["images"]] == list(range(1, 11))
    assert ds.coco.dataset["images"][0] == {"id": 1, "file_name": "good.jpg", "width": 64,
                                            "height": 48}
    assert ds.coco.dataset["categories"] == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def test_fast_reader_gives_what_json_load_gives(tmp_path: Path, monkeypatch) -> None:
    """msgspec's read (segmentations skipped unbuilt) equals json.load's on a file with what
    labelling tools write: extra keys everywhere, RLE and polygon segmentations, bool and int
    flags, a missing area, nulls, non-ASCII names, int and float numbers; and a file msgspec
    refuses (a NaN) falls back to json.load with the same cleaning."""
    from rfcn.data import coco_index

    images = [{"id": 7, "file_name": "säge/001.jpg", "width": 64, "height": 48,
               "license": 1, "coco_url": "http://x", "date_captured": None},
              {"id": 3, "file_name": "b.png", "width": 32.0, "height": 32, "flickr_url": ""},
              {"id": 9, "file_name": "c.jpg", "width": 0, "height": 10}]  # a bad size
    anns = [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [1, 2, 30.5, 20],
             "area": 610.0, "iscrowd": 0, "segmentation": [[1, 2, 31, 2, 31, 22]],
             "attributes": {"occluded": False}},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 70, 50], "iscrowd": True,
             "segmentation": {"counts": "abc123", "size": [48, 64]}},
            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [4, 4, 8, 8], "area": None},
            {"id": 5, "image_id": 3, "category_id": 9, "bbox": [1, 1, 2, 2]},  # unknown class
            {"id": 6, "image_id": 44, "category_id": 1, "bbox": [1, 1, 2, 2]},  # unknown image
            {"id": 8, "image_id": 3, "category_id": 2, "bbox": [5, 5, 0, 3], "difficult": 1}]
    data = {"info": {"year": 2024}, "licenses": [], "images": images, "annotations": anns,
            "categories": [{"id": 2, "name": "zwei", "supercategory": "x"},
                           {"id": 1, "name": "one"}]}
    path = tmp_path / "tool_export.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    def parsed() -> dict:
        index = coco_index.parse_coco(str(path))
        return {k: v.tolist() for k, v in index.encode().items()}

    fast = parsed()
    calls = []
    real = coco_index._decode_fast
    monkeypatch.setattr(coco_index, "_decode_fast",
                        lambda raw: calls.append(1) or (None if calls else real(raw)))
    assert parsed() == fast and calls  # the json.load path, same result
    monkeypatch.setattr(coco_index, "_decode_fast", real)
    anns[0]["area"] = float("nan")  # json.dumps writes NaN, which msgspec refuses
    path.write_text(json.dumps(data))
    assert coco_index._decode_fast(path.read_bytes()) is None
    nan_index = coco_index.parse_coco(str(path))
    assert len(nan_index.records) == len(fast["rec_image_ids"])
