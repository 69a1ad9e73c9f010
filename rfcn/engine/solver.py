"""SGD with momentum (or AdamW) and weight decay; linear warm-up, then step or cosine decay.

The schedule is a pure function of the iteration, so resuming only needs the iteration count
(the scheduler's state dict holds nothing else).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def build_optimizer(
    model: nn.Module,
    base_lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    name: str = "sgd",
    offset_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's solver) or AdamW (`momentum` is its beta1) over the
    trainable parameters; biases and normalisation weights get no decay. The offset convs of
    deformable convolutions (parameters named `*offset_conv*`) learn at `offset_lr_mult` x
    the rate (mmdetection / PaddleDetection use 0.1: zero-initialised offset weights that
    move at the full rate, AdamW's above all, scatter conv5's samples before the features
    are worth deforming)."""
    decay, no_decay, offset_decay, offset_no_decay = [], [], [], []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        offset = offset_lr_mult != 1.0 and "offset_conv" in pname
        if offset:
            (offset_no_decay if p.ndim <= 1 else offset_decay).append(p)
        else:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    for params, wd in ((offset_decay, weight_decay), (offset_no_decay, 0.0)):
        if params:
            groups.append({"params": params, "weight_decay": wd, "lr": base_lr * offset_lr_mult})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=momentum)
    if name == "adamw":
        # the fused kernel: one pass over all parameters (3x faster than the default on CPU)
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                    for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=base_lr, betas=(momentum, 0.999), fused=fused)
    raise ValueError(f"solver.optimizer must be 'sgd' or 'adamw', got {name!r}")


@dataclass
class LRMultiplier:
    """Learning-rate factor at iteration `it`: linear warm-up, then step or cosine decay.

    step: multiply by `gamma` at each iteration in `steps`. cosine: from 1 down to
    `final_factor` over `[warmup_iters, max_iter]`.
    """

    max_iter: int
    schedule: str = "step"
    steps: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    final_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        self.steps = tuple(int(s) for s in self.steps)
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"steps must be increasing, got {list(self.steps)}")

    def __call__(self, it: int) -> float:
        if self.schedule == "step":
            factor = self.gamma ** sum(1 for s in self.steps if it >= s)
        else:
            span = max(self.max_iter - self.warmup_iters, 1)
            t = min(max(it - self.warmup_iters, 0) / span, 1.0)
            factor = self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * t))
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    max_iter: int,
    schedule: str = "step",
    steps: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration LambdaLR (call `.step()` once per iteration)."""
    multiplier = LRMultiplier(
        max_iter=max_iter,
        schedule=schedule,
        steps=tuple(steps),
        gamma=gamma,
        warmup_iters=warmup_iters,
        warmup_factor=warmup_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
