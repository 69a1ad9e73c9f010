"""What an evaluation hands on: its detections in COCO results format (detections.json) and
its metrics as the table the tools print (COCO or VOC, chosen by the metric names)."""

from __future__ import annotations

from typing import Any

import torch

from rfcn.evaluation.coco import CocoEvaluator, detections_to_coco_results, format_coco_table
from rfcn.evaluation.voc import VOC_METRIC_NAMES, format_voc_table

__all__ = ["coco_results", "format_metrics"]


def coco_results(evaluator: Any, dataset: Any) -> list[dict[str, Any]]:
    """The evaluation's detections in COCO results format (original category ids)."""
    if isinstance(evaluator, CocoEvaluator):
        return evaluator.results
    out: list[dict[str, Any]] = []  # VOC: convert with the dataset's label -> id mapping
    for image_id, boxes, labels, scores in evaluator.detections:
        output = {"boxes": torch.as_tensor(boxes), "labels": torch.as_tensor(labels),
                  "scores": torch.as_tensor(scores)}
        out.extend(detections_to_coco_results(image_id, output, dataset.label_to_cat_id))
    return out


def format_metrics(metrics: dict[str, Any]) -> str:
    """The table of `metrics` (a VOC evaluation's when it holds VOC's metric names)."""
    if all(k in metrics for k in VOC_METRIC_NAMES):
        return format_voc_table(metrics)
    return format_coco_table(metrics)
