"""`infer(cfg)`, behind tools/infer.py: the checkpoint in PyTorch, or an exported file in
onnxruntime / torch.export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rfcn import build
from rfcn import config as rc
from rfcn.engine.checkpoint import load_checkpoint
from rfcn.engine.predict import list_images, predict_images
from rfcn.engine.process import configure_threads, setup_device
from rfcn.entrypoints.export import METADATA_KEYS, exported_classes
from rfcn.models.inference import inference_copy


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
        model = build.restore_model(ckpt, str(cfg.checkpoint), cfg.test).to(device)
        detector = inference_copy(build.test_time_model(model, cfg.test))
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
    path = Path(os.path.expanduser(cfg.model))
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if runtime == "onnxruntime":
        from rfcn.export.onnx_runtime import OnnxDetector

        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else None
        detector = OnnxDetector(path, providers)
        names, ids = exported_classes(detector.metadata, str(path))
        return detector, names, ids
    from rfcn.export import load_pt2
    from rfcn.export.exporters import load_pt2_metadata

    module = load_pt2(path)
    names, ids = exported_classes(load_pt2_metadata(path, METADATA_KEYS), str(path))

    def detect(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            boxes, labels, scores = module(image)
            out.append({"boxes": boxes, "labels": labels, "scores": scores})
        return out

    return detect, names, ids
