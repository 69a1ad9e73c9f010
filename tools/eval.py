"""Evaluate a checkpoint: COCO AP (COCOeval) or VOC mAP, written to the run dir.

    python tools/eval.py checkpoint=PATH [dataset=coco_json dataset.val.ann_file=...] \
        hydra.run.dir=DIR       # -> DIR/metrics.json, DIR/detections.json
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import rfcn.config as rc
from rfcn.checkpoint import CheckpointError
from rfcn.entrypoints.evaluate import evaluate
from rfcn.evaluation import format_metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        rc.unknown_added_keys(cfg, rc.command_line_overrides(), rc.EvalAppConfig)
        metrics = evaluate(cfg)
    except (CheckpointError, FileNotFoundError, rc.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if metrics:
        table = format_metrics(metrics)
        print(f"\n{metrics.get('dataset')}, {metrics.get('num_images')} images:\n{table}")


if __name__ == "__main__":
    main()
