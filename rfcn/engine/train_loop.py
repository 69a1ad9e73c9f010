"""What the training loop and its hooks share: the hook base class, the result of one step,
and the period test. The trainer (rfcn.engine.trainer) and the hooks (rfcn.engine.hooks) both
import this module and never each other at run time, as detectron2's HookBase lives in its
train_loop."""

from __future__ import annotations

from typing import Any, NamedTuple

# The hooks receive the rfcn.engine.trainer.Trainer; typed Any here so that this module
# imports nothing of the loop it serves.
Trainer = Any

__all__ = ["StepResult", "TrainHook", "every"]


class StepResult(NamedTuple):
    """What one iteration did: detached loss terms (floats), the total, the gradient norm
    (None when skipped), whether the step was applied, and the files skipped by the loader."""

    losses: dict[str, float]
    total: float
    grad_norm: float | None
    finite: bool
    skipped: int


class TrainHook:
    """No-op base; override what you need."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def every(period: int, trainer: Trainer) -> bool:
    """True on multiples of `period` (> 0) and after the run's last iteration."""
    return trainer.last_step or (period > 0 and trainer.iteration % period == 0)
