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

import rfcn.config  # noqa: F401  (registers the config schemas)
from rfcn.engine.checkpoint import CheckpointError
from rfcn.entrypoints.infer import infer


@hydra.main(version_base="1.3", config_path="../configs/standalone", config_name="infer")
def main(cfg: DictConfig) -> None:
    try:
        records = infer(cfg)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if not records:
        print(f"error: no readable image in {cfg.input} (see the warnings above)", file=sys.stderr)
        sys.exit(1)
    total = sum(len(r["detections"]) for r in records)
    print(f"{len(records)} images, {total} detections -> {cfg.output}")


if __name__ == "__main__":
    main()
