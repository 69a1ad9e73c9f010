"""The error analysis tools/eval.py writes beside metrics.json: a confusion matrix (JSON +
PNG), per-class PR curves (PNG) and, for COCO-format data, the COCO analyze() breakdown of
false positives (JSON + PNG)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rfcn.evaluation.coco import CocoEvaluator
from rfcn.evaluation.error_analysis import (
    coco_error_breakdown,
    confusion_matrix,
    confusion_to_dict,
)
from rfcn.utils.files import write_json

logger = logging.getLogger(__name__)


def per_image_detections(evaluator: Any, dataset: Any) -> list[dict[str, np.ndarray]]:
    """The evaluation's detections per image, in dataset order (xyxy, labels 1..C)."""
    by_image: dict[int, dict[str, list]] = {
        int(i): {"boxes": [], "labels": [], "scores": []} for i in dataset.image_ids}
    if isinstance(evaluator, CocoEvaluator):
        for r in evaluator.results:
            x, y, w, h = r["bbox"]
            d = by_image[int(r["image_id"])]
            d["boxes"].append([x, y, x + w, y + h])
            d["labels"].append(dataset.cat_id_to_label[int(r["category_id"])])
            d["scores"].append(r["score"])
    else:
        for image_id, boxes, labels, scores in evaluator.detections:
            d = by_image[int(image_id)]
            d["boxes"].extend(np.asarray(boxes).reshape(-1, 4).tolist())
            d["labels"].extend(np.asarray(labels).tolist())
            d["scores"].extend(np.asarray(scores).tolist())
    return [{"boxes": np.asarray(d["boxes"], np.float64).reshape(-1, 4),
             "labels": np.asarray(d["labels"], np.int64), "scores": np.asarray(d["scores"])}
            for d in (by_image[int(i)] for i in dataset.image_ids)]


def write_error_analysis(
    evaluator: Any, dataset: Any, out_dir: Path, iou_thresh: float = 0.5,
    score_thresh: float = 0.3,
) -> list[Path]:
    """Write confusion_matrix.{json,png}, pr_curves.png and (COCO) coco_errors.{json,png}
    to `out_dir`; returns the files written."""
    # matplotlib only where plots are drawn: training and eval without plots never import it
    from rfcn.visualization.plots import (
        plot_confusion_matrix,
        plot_error_breakdown,
        plot_pr_curves,
    )

    names = list(dataset.class_names)
    gts = [dataset.get_annotation(i) for i in range(len(dataset))]
    matrix = confusion_matrix(gts, per_image_detections(evaluator, dataset), len(names) - 1,
                              iou_thresh, score_thresh)
    files = [out_dir / "confusion_matrix.json", out_dir / "confusion_matrix.png",
             out_dir / "pr_curves.png"]
    write_json(files[0], confusion_to_dict(matrix, names, iou_thresh, score_thresh))
    plot_confusion_matrix(matrix, names, files[1])
    plot_pr_curves(getattr(evaluator, "pr_curves", {}), files[2])
    if isinstance(evaluator, CocoEvaluator):
        cat_names = {cat: names[label] for label, cat in evaluator.label_to_cat_id.items()}
        breakdown = coco_error_breakdown(evaluator.coco_gt, evaluator.results, cat_names,
                                         image_ids=list(dataset.image_ids))
        write_json(out_dir / "coco_errors.json", breakdown)
        plot_error_breakdown(breakdown, out_dir / "coco_errors.png")
        files += [out_dir / "coco_errors.json", out_dir / "coco_errors.png"]
    logger.info("wrote the error analysis: %s", ", ".join(f.name for f in files))
    return files
