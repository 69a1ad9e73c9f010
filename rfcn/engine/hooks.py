"""Trainer hooks: what happens around the bare loop (rfcn.engine.trainer), one job each.

A hook sees the trainer before training, after every step (with its `StepResult`) and after
training (also when training fails; `trainer.completed` tells). Hooks that keep state across
a resume (a best metric, a patience counter, the scalar history) return it from
`state_dict()`; the trainer stores it in every checkpoint and hands it back on resume.

Order matters and is the entry point's: progress, logging, evaluation (and what reads its
metrics: best checkpoint, early stopping), then the checkpoint, so that last.pt holds the
state the evaluation just updated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rfcn.engine.train_loop import StepResult, TrainHook, every
from rfcn.utils.distributed import is_main_process

if TYPE_CHECKING:
    from torch import nn

    from rfcn.engine.trainer import Trainer

logger = logging.getLogger(__name__)


class ScalarRecorder:
    """TensorBoard scalars (main process) and their history, the same values for both: the
    history feeds curves.png and travels in checkpoints so a resumed run keeps its curves."""

    def __init__(self, writer: Any | None = None) -> None:
        self.writer = writer
        self.history: dict[str, list[tuple[int, float]]] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.history.setdefault(tag, []).append((int(step), float(value)))
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def state_dict(self) -> dict[str, Any]:
        return {tag: [[s, v] for s, v in points] for tag, points in self.history.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {tag: [(int(s), float(v)) for s, v in points]
                        for tag, points in state.items()}


class ProgressHook(TrainHook):
    """A tqdm bar with the running loss and learning rate (main process)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and is_main_process()
        self.bar: Any = None
        self._loss, self._n = 0.0, 0

    def before_train(self, trainer: Trainer) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.settings.max_iter, initial=trainer.iteration,
                            desc="train", dynamic_ncols=True, smoothing=0.1)

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if result.finite:
            self._loss, self._n = self._loss + result.total, self._n + 1
        if self._n:
            self.bar.set_postfix(loss=f"{self._loss / self._n:.3f}",
                                 lr=f"{trainer.optimizer.param_groups[0]['lr']:.2e}")
        if trainer.iteration % 20 == 0:
            self._loss, self._n = 0.0, 0

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogHook(TrainHook):
    """Every `period` iterations: the mean loss terms of the window in the log and, as
    scalars, train/<term>, train/lr, train/grad_norm, train/nonfinite_steps and
    data/skipped_files."""

    def __init__(self, period: int, recorder: ScalarRecorder) -> None:
        self.period = period
        self.recorder = recorder
        self._window: dict[str, float] = {}
        self._n = 0
        self._start = (0.0, 0)

    def before_train(self, trainer: Trainer) -> None:
        self._start = (time.perf_counter(), trainer.iteration)

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        if result.finite:
            for k, v in result.losses.items():
                self._window[k] = self._window.get(k, 0.0) + v
            self._window["loss"] = self._window.get("loss", 0.0) + result.total
            self._n += 1
        if every(self.period, trainer):
            self._log(trainer, result.grad_norm)
            self._window, self._n = {}, 0

    def _log(self, trainer: Trainer, grad_norm: float | None) -> None:
        if not is_main_process():
            return
        it = trainer.iteration
        lr = trainer.optimizer.param_groups[0]["lr"]
        elapsed = time.perf_counter() - self._start[0]
        per_it = elapsed / max(it - self._start[1], 1)
        means = {k: v / self._n for k, v in self._window.items()} if self._n else {}
        logger.info("iter %d/%d  %s  lr %.3g  %.2fs/it  eta %ds", it, trainer.settings.max_iter,
                    "  ".join(f"{k} {v:.4f}" for k, v in means.items()), lr, per_it,
                    int(per_it * (trainer.settings.max_iter - it)))
        for k, v in means.items():
            self.recorder.add_scalar(f"train/{k}", v, it)
        self.recorder.add_scalar("train/lr", lr, it)
        if grad_norm is not None:
            self.recorder.add_scalar("train/grad_norm", grad_norm, it)
        self.recorder.add_scalar("train/nonfinite_steps", trainer.counters.nonfinite_steps, it)
        self.recorder.add_scalar("data/skipped_files", trainer.counters.skipped_files, it)

    def state_dict(self) -> dict[str, Any]:
        return {"scalars": self.recorder.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state.get("scalars", {}))


class EvalHook(TrainHook):
    """Evaluate every `period` iterations (0: only at the end) and after the last one;
    sets `trainer.metrics` and records eval/<metric> and eval_per_class/<class> scalars.

    Args:
        evaluate_fn: `(model, iteration) -> metrics`, the model being the trainer's moving
            average of the weights when it keeps one (`train.ema`), else the bare training
            model; every rank calls it (the metrics come back on the main process).
    """

    def __init__(
        self,
        period: int,
        evaluate_fn: Callable[[nn.Module, int], dict[str, Any]],
        recorder: ScalarRecorder,
    ) -> None:
        self.period = period
        self.evaluate_fn = evaluate_fn
        self.recorder = recorder
        self.last_iteration: int | None = None  # of the latest evaluation

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        if every(self.period, trainer):
            self.evaluate(trainer)

    def after_train(self, trainer: Trainer) -> None:
        # a resumed run with nothing left to train still reports its metrics
        if trainer.completed and self.last_iteration != trainer.iteration:
            self.evaluate(trainer)

    def evaluate(self, trainer: Trainer) -> dict[str, Any]:
        metrics = trainer.run_evaluation(self.evaluate_fn)
        trainer.metrics = metrics
        self.last_iteration = trainer.iteration
        if metrics and is_main_process():
            for k, v in metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "num_images":
                    self.recorder.add_scalar(f"eval/{k}", v, trainer.iteration)
            for name, ap in (metrics.get("per_class") or {}).items():
                if ap is not None:
                    self.recorder.add_scalar(f"eval_per_class/{name}", ap, trainer.iteration)
            self.recorder.flush()
        return metrics


class CheckpointHook(TrainHook):
    """last.pt every `period` iterations and after the last one, unless the step is part of
    a non-finite streak (weights that just produced a non-finite loss are not "good")."""

    def __init__(self, period: int) -> None:
        self.period = period

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        if not every(self.period, trainer):
            return
        if trainer.in_nonfinite_streak:
            logger.warning("iteration %d: checkpoint deferred (non-finite streak)",
                           trainer.iteration)
            return
        trainer.save()


class BestCheckpointHook(TrainHook):
    """After each evaluation: `checkpoints/best.pt` when `metric` improved (higher is better),
    and early stopping after `patience` evaluations without improvement (0: never).

    The decision is the main process's (it holds the metrics), sent to every rank so that all
    of them save (each contributes its RNG streams) and stop together.
    """

    def __init__(self, metric: str, patience: int, eval_hook: EvalHook, path: Any) -> None:
        self.metric = metric
        self.patience = patience
        self.eval_hook = eval_hook
        self.path = path
        self.best: float | None = None
        self.best_iteration: int | None = None
        self.bad_evals = 0

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        if self.eval_hook.last_iteration != trainer.iteration:
            return  # no fresh evaluation this step
        from rfcn.utils.distributed import broadcast_object

        improved = broadcast_object(self._update(trainer.metrics, trainer.iteration))
        if improved:
            trainer.save(self.path)
        elif self.patience > 0 and self.bad_evals >= self.patience and not trainer.last_step:
            trainer.stop_reason = (
                f"early stopping: {self.metric} did not improve for {self.bad_evals} "
                f"evaluations (best {self.best:.4f} at iteration {self.best_iteration})")

    def _update(self, metrics: dict[str, Any], iteration: int) -> bool:
        if not is_main_process():
            return False
        value = metrics.get(self.metric)
        if not isinstance(value, int | float):
            raise ValueError(
                f"train.best_metric={self.metric!r} is not among the evaluation's metrics "
                f"{sorted(k for k, v in metrics.items() if isinstance(v, int | float))}")
        if self.best is None or value > self.best:
            logger.info("iteration %d: best %s so far, %.4f (was %s)", iteration, self.metric,
                        value, "none" if self.best is None else f"{self.best:.4f}")
            self.best, self.best_iteration, self.bad_evals = float(value), iteration, 0
            return True
        self.bad_evals += 1
        return False

    def summary(self) -> dict[str, Any] | None:
        if self.best is None:
            return None
        return {"metric": self.metric, "value": self.best, "iteration": self.best_iteration,
                "checkpoint": str(self.path)}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iteration": self.best_iteration,
                "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.best_iteration = state.get("best_iteration")
        self.bad_evals = int(state.get("bad_evals", 0))


class CurvesHook(TrainHook):
    """`curves.png` (losses, learning rate, evaluation metrics over iterations) from the
    scalars TensorBoard receives, after each evaluation and at the end (main process)."""

    def __init__(self, recorder: ScalarRecorder, path: Any, eval_hook: EvalHook) -> None:
        self.recorder = recorder
        self.path = path
        self.eval_hook = eval_hook

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        if self.eval_hook.last_iteration == trainer.iteration:
            self._plot()

    def after_train(self, trainer: Trainer) -> None:
        self._plot()

    def _plot(self) -> None:
        if not is_main_process() or not self.recorder.history:
            return
        from rfcn.visualization.plots import plot_training_curves

        plot_training_curves(self.recorder.history, self.path)
