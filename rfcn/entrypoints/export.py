"""`export(cfg)`, behind tools/export.py: a checkpoint as an ONNX or torch.export file that
carries its class names (for tools/infer.py runtime=onnxruntime / pt2)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rfcn import build
from rfcn import config as rc
from rfcn.engine.checkpoint import load_checkpoint

METADATA_KEYS = ["rfcn_class_names", "rfcn_label_to_cat_id", "rfcn_model_spec"]


def export(cfg: Any) -> Path:
    """Write `cfg.output`; returns its path."""
    if cfg.test.scales or cfg.test.flip:
        raise ValueError("test.scales / test.flip (test-time augmentation) run several passes: "
                         "an exported file holds one; export without them")
    ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
    model = build.restore_model(ckpt, str(cfg.checkpoint), cfg.test).eval()
    metadata = {
        "rfcn_class_names": json.dumps(list(ckpt["class_names"])),
        "rfcn_label_to_cat_id": json.dumps(
            {str(k): int(v) for k, v in (ckpt.get("label_to_cat_id") or {}).items()}),
        "rfcn_model_spec": json.dumps(model.spec.to_dict()),
    }
    from rfcn.export import export_onnx, export_pt2

    out = Path(os.path.expanduser(cfg.output))
    size = tuple(int(v) for v in cfg.example_size)
    if rc.plain(cfg.format) == "onnx":
        return export_onnx(model, out, opset=int(cfg.opset), example_size=size,
                           metadata=metadata)
    return export_pt2(model, out, example_size=size, metadata=metadata)


def exported_classes(metadata: dict[str, str], source: str) -> tuple[list[str], dict[int, int]]:
    """Class names and label -> category id of an exported file (written by `export`)."""
    if not metadata.get("rfcn_class_names"):
        raise ValueError(f"{source} carries no class names: export it with tools/export.py")
    names = json.loads(metadata["rfcn_class_names"])
    ids = {int(k): int(v) for k, v in json.loads(metadata.get("rfcn_label_to_cat_id") or "{}")
           .items()}
    return names, ids
