"""`infer(cfg)`, behind tools/infer.py: the checkpoint in PyTorch, or an exported file in
onnxruntime / torch.export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rfcn import assembly
from rfcn import config as rc
from rfcn.checkpoint import load_checkpoint
from rfcn.data.image_io import list_images
from rfcn.inference.exported import load_exported
from rfcn.inference.predict import predict_images
from rfcn.models.inference import inference_copy
from rfcn.utils.process import configure_threads, setup_device


def infer(cfg: Any) -> list[dict[str, Any]]:
    """Detect objects in an image or a folder; writes drawn images and detections.json to
    `cfg.output`; returns the detections (one record per readable image)."""
    device = setup_device(cfg.device)
    configure_threads(None, 0)
    runtime = rc.plain(cfg.runtime)
    if runtime == "torch":
        if not cfg.checkpoint:
            raise ValueError("runtime=torch needs checkpoint=PATH")
        ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
        model = assembly.restore_model(ckpt, str(cfg.checkpoint), cfg.test).to(device)
        detector = inference_copy(assembly.test_time_model(model, cfg.test))
        class_names = list(ckpt["class_names"])
        label_to_cat_id = {int(k): int(v)
                           for k, v in (ckpt.get("label_to_cat_id") or {}).items()}
    else:
        detector, class_names, label_to_cat_id = _exported(cfg, runtime, device)
    paths = list_images(Path(os.path.expanduser(cfg.input)))
    return predict_images(detector, paths, Path(os.path.expanduser(cfg.output)), class_names,
                          label_to_cat_id, cfg.score_thresh, device)


def _exported(cfg: Any, runtime: str, device: torch.device) -> tuple[Any, list[str], dict]:
    if not cfg.model:
        raise ValueError(f"runtime={runtime} needs model=FILE (written by tools/export.py)")
    exported = load_exported(Path(os.path.expanduser(cfg.model)), runtime, device)
    return exported.detect, exported.class_names, exported.label_to_cat_id
