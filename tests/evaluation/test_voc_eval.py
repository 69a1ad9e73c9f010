"""VOC evaluator against hand-computed AP (py-faster-rcnn / devkit semantics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfcn.evaluation.voc import VOCEvaluator, format_voc_table, voc_ap

CLASS_NAMES = ["__background__", "car", "dog"]


def _target(image_id: int, boxes: list, labels: list, difficult: list) -> dict:
    return {
        "image_id": image_id,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
    }


def _output(boxes: list, labels: list, scores: list) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def test_hand_computed_ap_with_duplicate_and_difficult() -> None:
    g1, g_diff, g2 = [10, 10, 50, 50], [100, 100, 140, 140], [20, 20, 80, 60]
    targets = [
        _target(1, [g1, g_diff], [1, 1], [False, True]),
        _target(2, [g2], [1], [False]),
    ]
    # by score: TP(g1), FP(duplicate g1), ignored(difficult), TP(g2), FP(nothing)
    outputs = [
        _output([g1, g1, g_diff], [1, 1, 1], [0.9, 0.8, 0.7]),
        _output([g2, [300, 300, 320, 320]], [1, 1], [0.6, 0.5]),
    ]
    evaluator = VOCEvaluator(CLASS_NAMES)
    evaluator.process(targets, outputs)
    metrics = evaluator.evaluate()
    # rec = [.5,.5,.5,1,1], prec = [1,.5,.5,2/3,.5]
    assert metrics["per_class"]["car"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert metrics["per_class_07"]["car"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert metrics["per_class"]["dog"] is None  # no ground truth: left out of the mean
    assert metrics["mAP"] == pytest.approx(0.5 + 1 / 3)
    assert metrics["mAP07"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert "mAP07" in format_voc_table(metrics)


def test_iou_is_the_devkits_on_continuous_boxes() -> None:
    # gt is continuous (0, 0, 10, 10) = XML (1, 1, 10, 10), 10x10 inclusive pixels; the
    # detection (0, 0, 10, 5.5) = devkit (1, 1, 10, 5.5) covers 10x5.5: IoU 0.55, a match.
    # (Adding +1 to continuous boxes would give 11x6.5 / 11x11 = 0.59: one pixel too large.)
    evaluator = VOCEvaluator(CLASS_NAMES)
    evaluator.process(
        [_target(1, [[0, 0, 10, 10]], [1], [False])],
        [_output([[0, 0, 10, 5.5]], [1], [0.9])],
    )
    assert evaluator.evaluate()["mAP"] == pytest.approx(1.0)


def test_iou_threshold_is_strict() -> None:
    # IoU exactly 0.5 is not a match (py-faster-rcnn's voc_eval: ovmax > 0.5; the MATLAB
    # devkit's VOCevaldet uses >= 0.5, which differs only on such exact ties)
    evaluator = VOCEvaluator(CLASS_NAMES)
    evaluator.process(
        [_target(1, [[0, 0, 10, 10]], [1], [False])],
        [_output([[0, 0, 10, 5]], [1], [0.9])],
    )
    assert evaluator.evaluate()["mAP"] == pytest.approx(0.0)


def test_no_detections_and_no_images() -> None:
    evaluator = VOCEvaluator(CLASS_NAMES)
    evaluator.process([_target(1, [[0, 0, 9, 9]], [2], [False])], [_output([], [], [])])
    metrics = evaluator.evaluate()
    assert metrics["mAP"] == 0.0 and metrics["per_class"]["dog"] == 0.0
    evaluator.reset()
    assert evaluator.evaluate()["mAP"] == 0.0


def test_voc_ap_reference_values() -> None:
    rec = np.array([0.25, 0.5, 0.5, 0.75])
    prec = np.array([1.0, 1.0, 2 / 3, 0.75])
    assert voc_ap(rec, prec) == pytest.approx(0.5 * 1.0 + 0.25 * 0.75)
    # 11-point: t in {0..0.5}: 1.0 (6 points); t in {0.6, 0.7}: 0.75; t >= 0.8: 0
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((6 + 2 * 0.75) / 11)
