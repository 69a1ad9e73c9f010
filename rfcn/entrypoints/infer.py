"""`infer(cfg)`, behind tools/infer.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rfcn import build
from rfcn.engine.checkpoint import load_checkpoint
from rfcn.engine.predict import list_images, predict_images
from rfcn.engine.process import configure_threads, setup_device
from rfcn.models.inference import inference_copy


def infer(cfg: Any) -> list[dict[str, Any]]:
    """Detect objects in an image or a folder; writes drawn images and detections.json to
    `cfg.output`; returns the detections (one record per readable image)."""
    device = setup_device(cfg.device)
    configure_threads(None, 0)
    ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
    model = inference_copy(build.restore_model(ckpt, str(cfg.checkpoint)).to(device))
    label_to_cat_id = {int(k): int(v) for k, v in (ckpt.get("label_to_cat_id") or {}).items()}
    paths = list_images(Path(os.path.expanduser(cfg.input)))
    return predict_images(model, paths, Path(os.path.expanduser(cfg.output)),
                          list(ckpt["class_names"]), label_to_cat_id, cfg.score_thresh, device)
