"""`export(cfg)`, behind tools/export.py: a checkpoint as an ONNX or torch.export file that
carries its class names (for tools/infer.py runtime=onnxruntime / pt2)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rfcn import assembly
from rfcn import config as rc
from rfcn.checkpoint import load_checkpoint
from rfcn.export.metadata import export_metadata

logger = logging.getLogger(__name__)


def export(cfg: Any) -> Path:
    """Write `cfg.output`; returns its path."""
    if cfg.test.scales or cfg.test.flip:
        raise ValueError("test.scales / test.flip (test-time augmentation) run several passes: "
                         "an exported file holds one; export without them")
    ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
    test = dict(rc.plain(cfg.test))
    if test.get("box_nms") is None:
        trained_nms = assembly.checkpoint_spec(ckpt, str(cfg.checkpoint)).post.box_nms
        if trained_nms != "nms":
            # soft-NMS has no graph form; a checkpoint that evaluates with it exports with
            # plain NMS at its own threshold unless the user asked for soft-NMS explicitly
            logger.warning("the checkpoint post-processes with box_nms=%s (soft-NMS), which has "
                           "no graph form: exporting with box_nms=nms; tools/eval.py "
                           "test.box_nms=nms gives the exported file's accuracy", trained_nms)
            test["box_nms"] = "nms"
    model = assembly.restore_model(ckpt, str(cfg.checkpoint), test).eval()
    metadata = export_metadata(list(ckpt["class_names"]), ckpt.get("label_to_cat_id"),
                               model.spec.to_dict())
    from rfcn.export import export_onnx, export_pt2

    out = Path(os.path.expanduser(cfg.output))
    size = tuple(int(v) for v in cfg.example_size)
    if rc.plain(cfg.format) == "onnx":
        return export_onnx(model, out, opset=int(cfg.opset), example_size=size,
                           metadata=metadata)
    return export_pt2(model, out, example_size=size, metadata=metadata)

