"""An exponential moving average of the model's weights (`train.ema=true`), as ultralytics'
ModelEMA: after every applied optimizer step, each floating-point tensor of the state dict
(parameters and buffers, BatchNorm running statistics included) moves towards the training
weights, `ema = d * ema + (1 - d) * weights`, with a decay that ramps up over the first
updates, `d(n) = decay * (1 - exp(-n / tau))`, so that the average soon forgets the random
initialisation. Non-floating tensors (counters) are copied.

The average is what evaluation during training, best.pt and every tool see: a checkpoint of
an EMA run stores it as `"model"` (what eval, infer, export and fine-tuning rebuild from), the
raw training weights as `"model_train"` (what resume continues) and the update count under
`"ema"` (`checkpoint_weights`, `load_ema`, `training_weights`).

Resume is exact: the decay is a pure function of the update count, which the checkpoint
stores with the averaged weights. Under DDP every process updates its own average from the
same weights (DDP starts every process from rank 0's and all-reduces the gradients, so every
optimizer step gives the same parameters everywhere), so the averages stay identical without
any communication; only rank 0 writes them. One exception, as for the training weights:
BatchNorm on CPU (no SyncBatchNorm) keeps per-process running statistics, so those buffers
of the average differ between processes too; rank 0's are saved.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["ModelEMA", "checkpoint_weights", "ema_decay", "load_ema", "training_weights"]

# The checkpoint entry of the raw training weights of an EMA run ("model" is the average).
TRAIN_WEIGHTS = "model_train"


def ema_decay(updates: int, decay: float, tau: float) -> float:
    """The decay of update number `updates` (1 for the first): `decay * (1 - exp(-n/tau))`,
    about n/tau for n << tau (the average follows the weights), `decay` for n >> tau."""
    return decay * (1.0 - math.exp(-updates / tau))


class ModelEMA:
    """The moving average of a model's state dict, kept in `module`, a copy of the model in
    eval mode without gradients.

    Args:
        model: the bare model (not DDP-wrapped), at the weights the average starts from.
        decay: the decay once ramped up, in (0, 1); 1 / (1 - decay) updates is about the
            averaging window.
        tau: how many updates the ramp takes (decay * 0.63 after tau updates), > 0.
    """

    def __init__(self, model: nn.Module, decay: float, tau: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}")
        if not tau > 0.0:
            raise ValueError(f"train.ema_tau must be > 0 (updates of the ramp), got {tau}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards `model`'s current weights (call it after each
        applied optimizer step, never after a skipped one)."""
        self.updates += 1
        weight = 1.0 - ema_decay(self.updates, self.decay, self.tau)
        source = model.state_dict()
        for name, value in self.module.state_dict().items():  # views of the module's tensors
            new = source[name].detach()
            if value.is_floating_point():
                value.lerp_(new.to(value.dtype), weight)
            else:
                value.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and the counters that make the next update exact."""
        return {"weights": self.module.state_dict(), "updates": self.updates,
                "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The weights and the update count of `state_dict()`; decay and tau stay this
        run's (a changed train.ema_decay / ema_tau takes effect from here, logged)."""
        self.module.load_state_dict(state["weights"], strict=True)
        self.updates = int(state["updates"])
        old = (state.get("decay", self.decay), state.get("tau", self.tau))
        if old != (self.decay, self.tau):
            logger.info("train.ema: decay %g, tau %g from here (the checkpoint had %g, %g)",
                        self.decay, self.tau, *old)


def checkpoint_weights(model: nn.Module, ema: ModelEMA | None) -> dict[str, Any]:
    """The weight entries of a training checkpoint: `"model"` is what the tools rebuild (the
    average when there is one), the raw weights go to `"model_train"` and the EMA's counters
    to `"ema"`."""
    if ema is None:
        return {"model": model.state_dict()}
    state = ema.state_dict()
    return {"model": state.pop("weights"), TRAIN_WEIGHTS: model.state_dict(), "ema": state}


def training_weights(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """`checkpoint` with its raw training weights as `"model"` (what resume loads)."""
    if TRAIN_WEIGHTS not in checkpoint:
        return checkpoint
    return {**checkpoint, "model": checkpoint[TRAIN_WEIGHTS]}


def load_ema(ema: ModelEMA | None, checkpoint: dict[str, Any]) -> None:
    """The average of a resumed run: the checkpoint's, a fresh one (from the resumed weights
    `ema` was copied from) when it has none; dropped, logged, when this run has EMA off."""
    if ema is not None and "ema" in checkpoint:
        ema.load_state_dict({**checkpoint["ema"], "weights": checkpoint["model"]})
    elif ema is not None:
        logger.info("train.ema: the checkpoint has no moving average; it starts from the "
                    "resumed weights")
    elif "ema" in checkpoint:
        logger.warning("train.ema=false: the checkpoint's moving average is dropped; training "
                       "continues from its raw weights (%s)", TRAIN_WEIGHTS)
