"""`evaluate(cfg)`, behind tools/eval.py."""

from __future__ import annotations

import logging
import os
from typing import Any

from rfcn import assembly
from rfcn import config as rc
from rfcn.checkpoint import check_classes, load_checkpoint
from rfcn.evaluation import coco_results, evaluate_model, write_error_analysis
from rfcn.utils.distributed import is_main_process
from rfcn.utils.files import write_json
from rfcn.utils.process import setup_process

logger = logging.getLogger(__name__)


def evaluate(cfg: Any) -> dict[str, Any]:
    """Evaluate `cfg.checkpoint` on `cfg.dataset` (default: the checkpoint's own dataset).

    Writes metrics.json and detections.json (COCO results format, original category ids)
    to the output directory; returns the metrics (main process).
    """
    output_dir = rc.resolve_output_dir(cfg)
    device = setup_process(cfg.device, cfg.num_threads, cfg.num_workers)
    ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
    model = assembly.restore_model(ckpt, str(cfg.checkpoint), cfg.test).to(device)
    dataset_cfg = rc.validate_dataset_config(
        cfg.dataset if cfg.dataset else rc.from_yaml(ckpt["config"]).dataset)
    dataset = assembly.build_eval_dataset(dataset_cfg)
    check_classes(ckpt["class_names"], dataset.class_names, f"evaluating {cfg.checkpoint}")
    evaluator = assembly.build_evaluator(dataset_cfg.name, dataset)
    metrics = evaluate_model(assembly.test_time_model(model, cfg.test), dataset, evaluator, device,
                             cfg.num_workers)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {**metrics, "iteration": int(ckpt.get("iteration", 0)),
                   "dataset": dataset_cfg.name, "checkpoint": str(cfg.checkpoint)}
        write_json(output_dir / "metrics.json", metrics)
        write_json(output_dir / "detections.json", coco_results(evaluator, dataset))
        logger.info("wrote %s and detections.json", output_dir / "metrics.json")
        if cfg.analysis:
            write_error_analysis(evaluator, dataset, output_dir, cfg.confusion_iou_thresh,
                                 cfg.confusion_score_thresh)
    evaluator.release()
    return metrics
