"""Train R-FCN from the Hydra configs in configs/.

    python tools/train.py                                  # CPU quickstart (synthetic data)
    python tools/train.py dataset=coco_json dataset.train.ann_file=... dataset.train.img_dir=... \
        dataset.val.ann_file=... dataset.val.img_dir=...
    python tools/train.py hydra.run.dir=DIR train.resume=true   # continue DIR's run as it was
    torchrun --nproc_per_node=2 tools/train.py train.device=cpu  # DDP

Ctrl-C or SIGTERM: the current iteration is saved to DIR/checkpoints/last.pt, the command that
resumes is printed, exit status 130 / 143. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import rfcn.config as rc
from rfcn.checkpoint import CheckpointError
from rfcn.data.loader import UnreadableImagesError
from rfcn.engine.interrupt import TrainingInterrupted
from rfcn.engine.trainer import TrainingDiverged
from rfcn.entrypoints.train import train
from rfcn.evaluation import format_metrics


def _resume_line(cfg: DictConfig) -> str:
    return f"python tools/train.py hydra.run.dir={rc.resolve_output_dir(cfg)} train.resume=true"


def _report(cfg: DictConfig, metrics: dict) -> None:
    if "already_finished" in metrics:
        print(f"{rc.resolve_output_dir(cfg)}: already finished at iteration "
              f"{metrics['already_finished']} (train.max_iter={metrics['max_iter']}); nothing to "
              "train. Give a larger train.max_iter=... to continue it.")
        if "AP" in metrics or "mAP" in metrics:
            print(format_metrics(metrics))
        return
    print(f"\nEvaluation after {metrics.get('iteration')} iterations "
          f"({metrics.get('dataset')}, {metrics.get('num_images')} images):\n"
          f"{format_metrics(metrics)}")
    print(f"\ncheckpoint: {metrics.get('checkpoint')}")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    overrides = rc.command_line_overrides()
    try:
        rc.unknown_added_keys(cfg, overrides, rc.TrainAppConfig)
        metrics = train(cfg, command_line=overrides)
    except TrainingInterrupted as e:
        print(f"\nstopped by {e}; resume with:\n  {_resume_line(cfg)}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("\nstopped at once (second Ctrl-C); the last checkpoint is the last one saved",
              file=sys.stderr)
        sys.exit(130)
    except (TrainingDiverged, CheckpointError, FileNotFoundError, rc.ConfigError,
            UnreadableImagesError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if metrics:
        _report(cfg, metrics)


if __name__ == "__main__":
    main()
