"""Evaluate a model on a dataset (its inference copy, this rank's shard, gathered metrics),
and the evaluation extras a training run sends to TensorBoard."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rfcn.data.loader import build_test_loader
from rfcn.engine.distributed import get_rank, get_world_size
from rfcn.engine.evaluator import DatasetEvaluator, inference_on_dataset
from rfcn.engine.visualize import draw_detections
from rfcn.models.inference import inference_copy


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    evaluator: DatasetEvaluator,
    device: torch.device,
    num_workers: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Metrics of `model` on `dataset` (main process; {} on the others). The model runs as
    its inference copy (BatchNorm folded, channels-last: the same detections, faster)."""
    loader = build_test_loader(dataset, 1, num_workers=num_workers, rank=get_rank(),
                               world_size=get_world_size())
    amp = autocast_dtype if device.type == "cuda" else None
    return inference_on_dataset(inference_copy(model), loader, evaluator, device,
                                autocast_dtype=amp)


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
