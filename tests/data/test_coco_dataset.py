from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from rfcn.data import CocoDetection


@pytest.fixture
def coco(coco_files, caplog) -> CocoDetection:
    with caplog.at_level(logging.WARNING, logger="rfcn.data"):
        ds = CocoDetection(coco_files["img_dir"], coco_files["ann_file"])
    ds.construction_warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    return ds


def test_mapping_and_class_names(coco: CocoDetection) -> None:
    assert coco.class_names == ["__background__", "cat", "dog"]
    assert coco.cat_id_to_label == {3: 1, 7: 2}
    assert coco.label_to_cat_id == {1: 3, 2: 7}


def test_images_kept_and_metadata(coco: CocoDetection) -> None:
    # the zero-width image record is dropped, everything else kept (incl. no annotations)
    assert coco.image_ids == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert len(coco) == 10
    assert coco.aspect_ratios[0] == pytest.approx(64 / 48)
    assert coco.aspect_ratios[2] == pytest.approx(0.5)
    assert coco.image_path(0).endswith("good.jpg")


def test_boxes_labels_crowd(coco: CocoDetection) -> None:
    t = coco.get_annotation(0)
    assert t["image_id"] == 1 and t["orig_size"] == (48, 64)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    torch.testing.assert_close(t["boxes"], torch.tensor(
        [[10, 8, 30, 28], [40, 30, 50, 40], [50, 40, 64, 48]], dtype=torch.float32))
    assert t["labels"].tolist() == [2, 1, 1]
    assert t["iscrowd"].tolist() == [False, True, False]
    assert t["difficult"].tolist() == [False, False, False]


def test_empty_image_is_background(coco: CocoDetection) -> None:
    img, t = coco[1]
    assert img.shape == (3, 40, 40)
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    assert t["iscrowd"].shape == (0,)


def test_one_warning_counts_every_bad_record(coco: CocoDetection) -> None:
    assert len(coco.construction_warnings) == 1
    msg = coco.construction_warnings[0].getMessage()
    assert "ann.json" in msg
    for text in ("1 boxes with non-finite coordinates dropped",
                 "2 boxes with zero or negative size dropped",
                 "1 boxes entirely outside the image dropped",
                 "1 boxes reaching outside the image clipped",
                 "1 annotations with unknown image_id dropped",
                 "1 annotations with unknown category_id dropped",
                 "1 annotations with a malformed bbox (not 4 numbers) dropped",
                 "1 images with missing or invalid width/height dropped",
                 "1 annotations of dropped images dropped",
                 "1 annotations with a missing or duplicate id renumbered"):
        assert text in msg, text
    assert coco.num_bad_records == 11


def test_getitem_reads_exact_pixels(coco: CocoDetection) -> None:
    img, t = coco[0]
    assert img.shape == (3, 48, 64) and img.dtype == torch.float32
    x1, y1, x2, y2 = (int(v) for v in t["boxes"][0])
    inside = img[:, y1:y2, x1:x2]
    # red where the box is, black above it (JPEG chroma subsampling blurs the colours)
    assert inside[0].mean() > 0.7 and inside[1:].mean() < 0.15
    assert img[:, : y1 - 2].max() < 0.1


def test_grayscale_rgba_16bit_load_as_rgb(coco: CocoDetection) -> None:
    gray, _ = coco[3]
    assert gray.shape == (3, 20, 24)
    torch.testing.assert_close(gray, torch.full_like(gray, 100 / 255))
    rgba, t = coco[4]
    assert rgba.shape == (3, 20, 24)
    assert [round(float(c) * 255) for c in rgba[:, 0, 0]] == [200, 20, 10]
    assert t["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0]]
    deep, _ = coco[5]
    assert [round(float(c) * 255) for c in deep[:, 0, 0]] == [255, 128, 0]
    assert coco.load_image(5).dtype == np.uint8


@pytest.mark.parametrize(("index", "name", "what"), [
    (6, "truncated.jpg", "truncated"),
    (7, "notimage.jpg", "not a readable image"),
    (8, "missing.jpg", "cannot read"),
    (9, "wrongsize.png", "differs from the annotation"),
])
def test_bad_files_raise_naming_the_file(coco: CocoDetection, index, name, what) -> None:
    with pytest.raises(ValueError, match=what) as info:
        coco[index]
    assert name in str(info.value)
    with pytest.raises(ValueError, match=name):
        coco.load_image(index)
    coco.get_annotation(index)  # metadata still available


def test_cleaned_ground_truth_evaluates(coco: CocoDetection) -> None:
    """`.coco` holds the cleaned annotations; perfect detections score AP 1."""
    gt = coco.coco
    assert sorted(gt.getImgIds()) == coco.image_ids
    dets = []
    for i in range(len(coco)):
        t = coco.get_annotation(i)
        for box, label, crowd in zip(t["boxes"].tolist(), t["labels"].tolist(),
                                     t["iscrowd"].tolist(), strict=True):
            if not crowd:
                x1, y1, x2, y2 = box
                dets.append({"image_id": t["image_id"], "score": 1.0, "bbox": [
                    x1, y1, x2 - x1, y2 - y1], "category_id": coco.label_to_cat_id[label]})
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("content", "what"), [
    ('{"images": [', "not valid JSON"),
    ("[1, 2]", "top level must be a JSON object"),
    ('{"images": [], "categories": []}', "missing top-level key 'annotations'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
    ('{"images": [{"id": 1, "width": 2, "height": 2}], "annotations": [], "categories": []}',
     r"images\[0\] has no 'file_name'"),
    ('{"images": [], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}], '
     '"categories": []}', r"annotations\[0\] has no 'category_id'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1}]}',
     r"categories\[0\] has no 'name'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, '
     '{"id": 1, "name": "b"}]}', "duplicate category id 1"),
    ('{"images": [{"id": "x", "file_name": "a.jpg", "width": 2, "height": 2}], '
     '"annotations": [], "categories": []}', "is not an integer"),
])
def test_malformed_json_names_file_and_problem(tmp_path: Path, content: str, what: str) -> None:
    ann = _write(tmp_path / "bad_ann.json", content)
    with pytest.raises(ValueError, match=what) as info:
        CocoDetection(tmp_path, ann)
    assert "bad_ann.json" in str(info.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope.json"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


def test_clean_file_gives_no_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 5, "file_name": "a.png", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [0, 0, 10, 10],
                         "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}]}))
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(tmp_path, ann)
    assert not caplog.records
    assert ds.num_bad_records == 0
    assert ds.get_annotation(0)["boxes"].tolist() == [[0.0, 0.0, 10.0, 10.0]]
