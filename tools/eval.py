"""Evaluate a checkpoint: COCO AP (COCOeval) or VOC mAP, written to the run dir.

    python tools/eval.py checkpoint=PATH [dataset=coco_json dataset.val.ann_file=...] \
        hydra.run.dir=DIR       # -> DIR/metrics.json, DIR/detections.json
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import rfcn.config  # noqa: F401  (registers the config schemas)
from rfcn.engine.checkpoint import CheckpointError
from rfcn.engine.coco_eval import format_coco_table
from rfcn.engine.voc_eval import format_voc_table
from rfcn.entrypoints.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        metrics = evaluate(cfg)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if metrics:
        table = format_voc_table(metrics) if "mAP07" in metrics else format_coco_table(metrics)
        print(f"\n{metrics.get('dataset')}, {metrics.get('num_images')} images:\n{table}")


if __name__ == "__main__":
    main()
