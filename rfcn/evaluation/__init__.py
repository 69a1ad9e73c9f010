"""Evaluation: the evaluator interface and loop, COCO (pycocotools' COCOeval) and VOC (the
devkit's protocol) evaluators with their metric names and tables, error analysis and reports.

    from rfcn.evaluation import CocoEvaluator, evaluate_model, format_metrics
    metrics = evaluate_model(model, dataset, CocoEvaluator.from_dataset(dataset), device,
                             num_workers=2)
    print(format_metrics(metrics))
"""

from rfcn.evaluation.coco import COCO_METRIC_NAMES, CocoEvaluator, format_coco_table
from rfcn.evaluation.evaluator import DatasetEvaluator, evaluate_model, inference_on_dataset
from rfcn.evaluation.report import write_error_analysis
from rfcn.evaluation.results import coco_results, format_metrics
from rfcn.evaluation.voc import VOC_METRIC_NAMES, VOCEvaluator, format_voc_table

__all__ = [
    "COCO_METRIC_NAMES",
    "VOC_METRIC_NAMES",
    "CocoEvaluator",
    "DatasetEvaluator",
    "VOCEvaluator",
    "coco_results",
    "evaluate_model",
    "format_coco_table",
    "format_metrics",
    "format_voc_table",
    "inference_on_dataset",
    "write_error_analysis",
]
