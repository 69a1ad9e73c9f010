"""Train R-FCN from the Hydra configs in configs/.

    python tools/train.py                                  # CPU quickstart (synthetic data)
    python tools/train.py dataset=coco_json dataset.train.ann_file=... dataset.train.img_dir=... \
        dataset.val.ann_file=... dataset.val.img_dir=...
    python tools/train.py hydra.run.dir=DIR train.resume=true   # continue DIR/checkpoints/last.pt
    torchrun --nproc_per_node=2 tools/train.py train.device=cpu  # DDP
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import rfcn.config  # noqa: F401  (registers the config schemas)
from rfcn.engine.checkpoint import CheckpointError
from rfcn.engine.coco_eval import format_coco_table
from rfcn.engine.trainer import TrainingDiverged
from rfcn.engine.voc_eval import format_voc_table
from rfcn.entrypoints.train import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        metrics = train(cfg)
    except (TrainingDiverged, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if metrics:
        table = format_voc_table(metrics) if "mAP07" in metrics else format_coco_table(metrics)
        print(
            f"\nEvaluation after {metrics.get('iteration')} iterations "
            f"({metrics.get('dataset')}, {metrics.get('num_images')} images):\n{table}"
        )
        print(f"\ncheckpoint: {metrics.get('checkpoint')}")


if __name__ == "__main__":
    main()
