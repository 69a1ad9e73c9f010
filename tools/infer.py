"""Detect objects in an image or a folder of images with a trained checkpoint.

python tools/infer.py checkpoint=PATH input=IMAGE_OR_DIR output=DIR [score_thresh=0.5]
python tools/infer.py runtime=onnxruntime model=model.onnx input=... output=...  # tools/export.py
python tools/infer.py checkpoint=PATH test.scales=[480,600] test.flip=true ...    # TTA
# -> DIR/<image name> with boxes, labels and scores drawn; DIR/detections.json
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import rfcn.config as rc
from rfcn.checkpoint import CheckpointError
from rfcn.entrypoints.infer import infer


@hydra.main(version_base="1.3", config_path="../configs/standalone", config_name="infer")
def main(cfg: DictConfig) -> None:
    try:
        rc.unknown_added_keys(cfg, rc.command_line_overrides(), rc.InferAppConfig)
        records = infer(cfg)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if not records:
        print(f"error: no readable image in {cfg.input} (see the warnings above)", file=sys.stderr)
        sys.exit(1)
    total = sum(len(r["detections"]) for r in records)
    below = sum(r.get("below_score_thresh", 0) for r in records)
    print(f"{len(records)} images, {total} detections with score >= {cfg.score_thresh} -> "
          f"{cfg.output}")
    if below:
        best = max((r.get("best_below", 0.0) for r in records), default=0.0)
        hint = f"; the best of them scored {best:.3f}" if best else ""
        print(f"{below} more detections scored below score_thresh={cfg.score_thresh}{hint} "
              f"(lower it, e.g. score_thresh={max(0.05, round(cfg.score_thresh / 2, 2))}, to "
              "see them)")


if __name__ == "__main__":
    main()
