"""Parse once (issue 21): the parsed COCO index is cached, invalidated when the JSON changes,
rebuilt (with a warning) when the cache file is damaged, never pickled."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import rfcn.data.coco_index as coco_index
from rfcn.data import CocoDetection
from rfcn.data.index_cache import default_cache_dir

IMAGES = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 80} for i in (1, 2, 3)]


def _write(path: Path, x: int = 10) -> Path:
    anns = [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [x, 20, 30, 40], "area": 1200,
             "iscrowd": 0, "segmentation": [[x, 20, x + 30, 20, x + 30, 60]]},
            {"id": 2, "image_id": 3, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 1,
             "segmentation": {"counts": [5, 10, 8000 - 15], "size": [80, 100]}}]
    path.write_text(json.dumps({"images": IMAGES, "annotations": anns,
                                "categories": [{"id": 5, "name": "thing"}]}))
    return path


def _first_box(ds: CocoDetection) -> list[float]:
    return ds.get_annotation(0)["boxes"].tolist()[0]


@pytest.fixture
def no_parse(monkeypatch):
    """Makes parsing fail: what loads now must come from the cache."""
    def fail(_):
        raise AssertionError("parsed although cached")

    return lambda: monkeypatch.setattr(coco_index, "parse_coco", fail)


def test_parsed_once_then_read_from_cache(tmp_path: Path, caplog, no_parse) -> None:
    ann, cache = _write(tmp_path / "ann.json"), tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="rfcn.data"):
        first = CocoDetection(tmp_path, ann, cache_dir=cache)
    assert "parsed" in caplog.text and "cached to" in caplog.text
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left
    with np.load(files[0], allow_pickle=False) as npz:  # plain arrays, no pickled objects
        assert all(npz[k].dtype != object for k in npz.files)
    no_parse()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rfcn.data"):
        again = CocoDetection(tmp_path, ann, cache_dir=cache)
    assert "from cache" in caplog.text
    assert again.image_ids == first.image_ids == [1, 2, 3]
    assert _first_box(again) == _first_box(first) == [10, 20, 40, 60]
    assert again.class_names == first.class_names and again.cat_id_to_label == {5: 1}
    assert again.get_annotation(2)["iscrowd"].tolist() == [True]
    assert again.coco.dataset["annotations"] == first.coco.dataset["annotations"]


def test_env_var_and_default_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RFCN_CACHE_DIR", str(tmp_path / "env_cache"))
    assert default_cache_dir() == tmp_path / "env_cache"
    CocoDetection(tmp_path, _write(tmp_path / "ann.json"))
    assert len(list((tmp_path / "env_cache").glob("ann-*.npz"))) == 1
    monkeypatch.delenv("RFCN_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "rfcn" / "index"


@pytest.mark.parametrize("same_mtime", [False, True])
def test_changed_json_is_parsed_again(tmp_path: Path, caplog, same_mtime: bool) -> None:
    ann, cache = _write(tmp_path / "ann.json"), tmp_path / "cache"
    assert _first_box(CocoDetection(tmp_path, ann, cache_dir=cache)) == [10, 20, 40, 60]
    before = ann.stat()
    _write(ann, x=12)  # one box changed, same file size
    assert ann.stat().st_size == before.st_size
    if same_mtime:  # only the content digest can tell
        os.utime(ann, ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level(logging.INFO, logger="rfcn.data"):
        ds = CocoDetection(tmp_path, ann, cache_dir=cache)
    assert "out of date" in caplog.text
    assert _first_box(ds) == [12, 20, 42, 60]
    assert ds.coco.dataset["annotations"][0]["bbox"] == [12, 20, 30, 40]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bad_columns"])
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path: Path, caplog, damage: str) -> None:
    ann, cache = _write(tmp_path / "ann.json"), tmp_path / "cache"
    CocoDetection(tmp_path, ann, cache_dir=cache)
    (cache_file,) = cache.iterdir()
    data = cache_file.read_bytes()
    if damage == "truncate":
        cache_file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        cache_file.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        cache_file.write_bytes(b"")
    else:  # a readable archive whose columns do not fit together
        with np.load(cache_file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["rec_boxes"] = arrays["rec_boxes"][:1]
        with open(cache_file, "wb") as f:
            np.savez(f, **arrays)
    with caplog.at_level(logging.WARNING, logger="rfcn.data"):
        ds = CocoDetection(tmp_path, ann, cache_dir=cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreadable" in warnings[0] and "parsing again" in warnings[0]
    assert _first_box(ds) == [10, 20, 40, 60] and len(ds) == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rfcn.data"):
        CocoDetection(tmp_path, ann, cache_dir=cache)  # rewritten: fine again
    assert not caplog.records


def test_unwritable_cache_dir_warns_and_goes_on(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="rfcn.data"):
        ds = CocoDetection(tmp_path, _write(tmp_path / "ann.json"), cache_dir=blocker / "sub")
    assert "cannot write the index cache" in caplog.text
    assert _first_box(ds) == [10, 20, 40, 60]


def test_bad_record_warning_repeats_from_cache(tmp_path: Path, caplog) -> None:
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": IMAGES, "categories": [{"id": 5, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 9, "category_id": 5, "bbox": [1, 1, 2, 2]}]}))
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rfcn.data"):
            ds = CocoDetection(tmp_path, ann, cache_dir=tmp_path / "cache")
        assert "1 annotations with unknown image_id dropped" in caplog.text
        assert ds.bad_records == {"annotations with unknown image_id dropped": 1}
