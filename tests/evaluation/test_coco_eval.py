"""COCO evaluator against hand-made detections with known AP."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO

from rfcn.evaluation.coco import CocoEvaluator, format_coco_table

# Non-contiguous category ids: results must come back in the dataset's own ids.
CATS = [{"id": 7, "name": "cat"}, {"id": 42, "name": "dog"}]
LABEL_TO_CAT = {1: 7, 2: 42}
CLASS_NAMES = ["__background__", "cat", "dog"]


def _coco(annotations: list[tuple[int, int, list[float]]], num_images: int = 3) -> COCO:
    images = [
        {"id": 100 + i, "width": 400, "height": 400, "file_name": f"{i}.jpg"}
        for i in range(num_images)
    ]
    anns = []
    for ann_id, (image_id, cat_id, (x, y, w, h)) in enumerate(annotations, start=1):
        anns.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_id,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": CATS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _target(image_id: int) -> dict:
    return {"image_id": image_id}


def _output(boxes: list[list[float]], labels: list[int], scores: list[float]) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def _xyxy(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + h]


# small (< 32^2), medium, large boxes so every area range is defined
GT = [
    (100, 7, [10.0, 10.0, 20.0, 20.0]),
    (100, 42, [100.0, 100.0, 60.0, 50.0]),
    (101, 7, [50.0, 60.0, 150.0, 120.0]),
    (102, 42, [5.0, 5.0, 25.0, 10.0]),
]


def _perfect_outputs() -> dict[int, dict]:
    by_image: dict[int, list] = {100: [], 101: [], 102: []}
    for image_id, cat_id, box in GT:
        label = {7: 1, 42: 2}[cat_id]
        by_image[image_id].append((_xyxy(*box), label, 0.9))
    return {
        img: _output([b for b, _, _ in dets], [lab for _, lab, _ in dets], [s for *_, s in dets])
        for img, dets in by_image.items()
    }


def test_perfect_detections_give_ap_one() -> None:
    evaluator = CocoEvaluator(_coco(GT), LABEL_TO_CAT, CLASS_NAMES)
    outputs = _perfect_outputs()
    for img, out in outputs.items():
        evaluator.process([_target(img)], [out])
    metrics = evaluator.evaluate()
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    assert {r["category_id"] for r in evaluator.results} == {7, 42}
    assert set(evaluator.pr_curves) == {"cat", "dog"}
    assert "AP50" in format_coco_table(metrics)


def test_half_of_the_ground_truth_found() -> None:
    # Two cats in two images, one found: precision 1 up to recall 0.5 → 51 of 101 points.
    gt = [(100, 7, [10.0, 10.0, 50.0, 50.0]), (101, 7, [20.0, 20.0, 60.0, 60.0])]
    evaluator = CocoEvaluator(_coco(gt, num_images=2), LABEL_TO_CAT, CLASS_NAMES)
    evaluator.process(
        [_target(100), _target(101)],
        [_output([_xyxy(10, 10, 50, 50)], [1], [0.8]), _output([], [], [])],
    )
    metrics = evaluator.evaluate()
    assert metrics["AP50"] == pytest.approx(51 / 101)
    assert metrics["AP"] == pytest.approx(51 / 101)
    assert metrics["per_class"]["cat"] == pytest.approx(51 / 101)
    assert metrics["per_class"]["dog"] is None  # no ground truth


def test_false_positive_ranked_first_halves_precision() -> None:
    gt = [(100, 7, [10.0, 10.0, 50.0, 50.0])]
    evaluator = CocoEvaluator(_coco(gt, num_images=1), LABEL_TO_CAT, CLASS_NAMES)
    evaluator.process(
        [_target(100)],
        [_output([_xyxy(200, 200, 50, 50), _xyxy(10, 10, 50, 50)], [1, 1], [0.9, 0.8])],
    )
    assert evaluator.evaluate()["AP50"] == pytest.approx(0.5)


def test_wrong_class_scores_zero_and_empty_data() -> None:
    gt = [(100, 7, [10.0, 10.0, 50.0, 50.0])]
    evaluator = CocoEvaluator(_coco(gt, num_images=1), LABEL_TO_CAT, CLASS_NAMES)
    evaluator.process([_target(100)], [_output([_xyxy(10, 10, 50, 50)], [2], [0.9])])
    assert evaluator.evaluate()["AP"] == pytest.approx(0.0)

    evaluator.reset()
    evaluator.process([_target(100)], [_output([], [], [])])
    metrics = evaluator.evaluate()
    assert metrics["AP"] == 0.0 and metrics["per_class"]["cat"] == 0.0

    evaluator.reset()
    assert evaluator.evaluate()["num_images"] == 0


def test_only_processed_images_are_scored() -> None:
    # Image 101's cat is never processed, so it does not count as missed.
    gt = [(100, 7, [10.0, 10.0, 50.0, 50.0]), (101, 7, [20.0, 20.0, 60.0, 60.0])]
    evaluator = CocoEvaluator(_coco(gt, num_images=2), LABEL_TO_CAT, CLASS_NAMES)
    evaluator.process([_target(100)], [_output([_xyxy(10, 10, 50, 50)], [1], [0.8])])
    assert evaluator.evaluate()["AP50"] == pytest.approx(1.0)
