"""Model statistics: parameter counts and FLOPs (torch's own flop counter)."""

from __future__ import annotations

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
