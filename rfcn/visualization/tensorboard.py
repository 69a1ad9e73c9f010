"""TensorBoard extras of an evaluation: per-class PR curves and sample images with their
predicted boxes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rfcn.visualization.draw import draw_detections


def tensorboard_eval_extras(
    writer: Any,
    model: nn.Module,
    dataset: Any,
    evaluator: Any,
    device: torch.device,
    iteration: int,
    num_images: int,
) -> None:
    """Per-class PR curves (from the evaluator) and sample images with predicted boxes."""
    for name, (recall, precision) in getattr(evaluator, "pr_curves", {}).items():
        order = np.argsort(-np.asarray(recall), kind="stable")  # descending recall
        rec = np.asarray(recall, dtype=np.float64)[order]
        prec = np.asarray(precision, dtype=np.float64)[order]
        zeros = np.zeros(len(rec))
        writer.add_pr_curve_raw(f"pr_curve/{name}", zeros, zeros, zeros, zeros, prec, rec,
                                iteration, num_thresholds=len(rec))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(min(num_images, len(dataset))):
                image, _ = dataset[i]
                out = model([image.to(device)])[0]
                canvas = (image.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
                drawn = draw_detections(canvas, out["boxes"].cpu(), out["labels"].cpu(),
                                        out["scores"].cpu(), dataset.class_names,
                                        score_thresh=0.3)
                writer.add_image(f"predictions/{i}", drawn, iteration, dataformats="HWC")
    finally:
        model.train(was_training)
    writer.flush()
