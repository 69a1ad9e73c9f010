"""Soft-NMS on torch tensors (rfcn.kernels.soft_nms_cpu; boxes go to the CPU, where the
kernel runs: a few thousand candidates per image, a few milliseconds)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rfcn.kernels import soft_nms_cpu

SOFT_METHODS = {"soft_linear": soft_nms_cpu.LINEAR, "soft_gaussian": soft_nms_cpu.GAUSSIAN}


def soft_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, method: str, iou_thresh: float = 0.3,
    sigma: float = 0.5, min_score: float = 0.001,
) -> tuple[Tensor, Tensor]:
    """Per-class soft-NMS (Bodla et al. 2017).

    boxes: Tensor[P, 4] xyxy, scores: Tensor[P], classes: int64 Tensor[P]; method
    "soft_linear" (decay by 1 - IoU above `iou_thresh`) or "soft_gaussian" (by
    exp(-IoU² / sigma)) -> (kept indices int64 Tensor[Q], their decayed scores Tensor[Q]),
    by decreasing decayed score; boxes whose score fell below `min_score` are gone.
    """
    if method not in SOFT_METHODS:
        raise ValueError(f"soft-NMS method must be one of {sorted(SOFT_METHODS)}, got {method!r}")
    if sigma <= 0:
        raise ValueError(f"soft_nms_sigma must be > 0, got {sigma}")
    device, dtype = scores.device, scores.dtype
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=device), scores.new_zeros(0)
    keep, kept = soft_nms_cpu.soft_nms(
        np.ascontiguousarray(boxes.detach().cpu().double().numpy()),
        np.ascontiguousarray(scores.detach().cpu().double().numpy()),
        np.ascontiguousarray(classes.detach().cpu().numpy().astype(np.int64)),
        SOFT_METHODS[method], float(iou_thresh), float(sigma), float(min_score))
    order = np.argsort(-kept, kind="stable")
    return (torch.from_numpy(keep[order]).to(device),
            torch.from_numpy(kept[order]).to(device=device, dtype=dtype))
