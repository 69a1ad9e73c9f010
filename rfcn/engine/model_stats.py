"""Model statistics: parameter counts, FLOPs (torch's own flop counter) and inference
throughput on a device."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"total", "trainable"} parameter counts."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


@torch.no_grad()
def count_flops(model: nn.Module, image: torch.Tensor) -> dict[str, Any]:
    """FLOPs of one eval-mode forward on `image` (Tensor[3, H, W]), counted by
    `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add, convolutions and
    matrix products; the PS RoI ops, NMS and element-wise ops are not counted: well under 1%
    of an R-FCN's total). Returns the total and the top-level modules' shares."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, depth=2) as counter:
            model([image])
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    parts = {name.removeprefix(f"{root}."): int(sum(ops.values()))
             for name, ops in counts.items() if name.count(".") == 1 and name.startswith(root)}
    return {"total": int(counter.get_total_flops()), "by_module": parts}


@torch.no_grad()
def measure_throughput(
    model: nn.Module, image: torch.Tensor, device: torch.device, runs: int = 10,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds per image and images/s of eval-mode inference on `device`."""
    model.eval()
    image = image.to(device)
    times = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model([image])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"seconds_per_image": median, "images_per_second": 1.0 / median, "runs": runs}
