"""The training loop: `run_step()` (forward, guards, backward, optimizer and LR step) in a bare
loop, with checkpointing, evaluation, logging and progress as hooks (rfcn.engine.hooks).

The trainer receives built objects (model, optimizer, a pure learning-rate multiplier, a
loader factory, hooks) and plain settings; the entry point (rfcn.entrypoints.train) builds
them from a config. Resuming is exact because every source of randomness is either restored
from the checkpoint (torch / numpy / python RNG) or a pure function of (seed, iteration) (the
data loader), and the learning-rate schedule is a pure function of the iteration: the
scheduler is built at the iteration training starts from, never patched. With a moving
average of the weights (rfcn.engine.ema), evaluation and the checkpoint's `"model"` are the
average's; the raw weights travel as `"model_train"` for resume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rfcn.checkpoint import (
    FORMAT_VERSION,
    capture_rng_state,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from rfcn.engine.ema import ModelEMA, checkpoint_weights, load_ema
from rfcn.engine.interrupt import StopRequest, TrainingInterrupted
from rfcn.engine.train_loop import StepResult, TrainHook
from rfcn.utils.distributed import (
    all_gather_object,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
)

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the message names the last good checkpoint."""


def _close(data: Any) -> None:
    """End a loader iterator's workers now, not at interpreter exit (idempotent)."""
    close = getattr(data, "close", None)
    if close is not None:
        close()


@dataclass
class TrainerSettings:
    max_iter: int
    amp_dtype: torch.dtype | None = None  # autocast dtype on CUDA (fp16 uses a GradScaler)
    clip_grad_norm: float | None = None
    max_nonfinite_steps: int = 5
    max_loss: float = 1e4  # a larger (finite) total loss counts as exploded, like NaN/inf


@dataclass
class _Counters:
    iteration: int = 0
    nonfinite_steps: int = 0
    consecutive_nonfinite: int = 0
    skipped_files: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Runs iterations `[iteration, max_iter)`.

    Args:
        model: the detector (possibly DDP-wrapped); train mode returns `dict[str, Tensor]`
            of `loss_*`.
        model_without_ddp: the bare module (its state dict goes into checkpoints).
        optimizer: over the trainable parameters, hyper-parameters from the current config.
        lr_multiplier: iteration -> factor of each group's base learning rate.
        loader_factory: `start_iter -> iterable of batches` (`.images`, `.targets`,
            `.skipped`); batch i must depend only on (seed, i).
        settings: loop settings; hooks hold the periods of what they do.
        checkpoint_meta: extra entries stored in every checkpoint (model_spec, class_names,
            label_to_cat_id, config, architecture).
        hooks: called in order after every step (rfcn.engine.hooks).
        ema: the moving average of `model_without_ddp`'s weights, updated after every
            applied step; evaluated and checkpointed as the model (None: off).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        model_without_ddp: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_multiplier: Callable[[int], float],
        loader_factory: Callable[[int], Iterable[Any]],
        device: torch.device,
        output_dir: Path,
        settings: TrainerSettings,
        checkpoint_meta: dict[str, Any],
        hooks: Sequence[TrainHook] = (),
        ema: ModelEMA | None = None,
    ) -> None:
        self.model = model
        self.model_without_ddp = model_without_ddp
        self.optimizer = optimizer
        self.lr_multiplier = lr_multiplier
        self.loader_factory = loader_factory
        self.device = device
        self.output_dir = Path(output_dir)
        self.settings = settings
        self.checkpoint_meta = checkpoint_meta
        self.hooks = list(hooks)
        self.ema = ema
        use_scaler = device.type == "cuda" and settings.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.counters = _Counters()
        self.metrics: dict[str, Any] = {}  # the latest evaluation
        self.stop_reason: str | None = None  # set by a hook to end the run early
        self.completed = False  # the loop ended normally (hooks' after_train may check)
        self.last_good_checkpoint: Path | None = None

    # ---- state ---------------------------------------------------------------------------

    @property
    def iteration(self) -> int:
        return self.counters.iteration

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / "checkpoints" / "last.pt"

    @property
    def last_step(self) -> bool:
        """True after the run's final iteration (max_iter, or a hook asked to stop)."""
        return self.iteration >= self.settings.max_iter or self.stop_reason is not None

    def state_dict(self) -> dict[str, Any]:
        assert self.scheduler is not None, "before_train() builds the scheduler"
        return {
            **self.checkpoint_meta,
            **checkpoint_weights(self.model_without_ddp, self.ema),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "nonfinite_steps": self.counters.nonfinite_steps,
            "skipped_files": self.counters.skipped_files,
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks if h.state_dict()},
            "rng": capture_rng_state(),
            "format_version": FORMAT_VERSION,
        }

    def load_training_state(self, checkpoint: dict[str, Any], path: Path | None = None) -> None:
        """Optimizer buffers, scaler, counters, hooks, RNG and the moving average from a
        checkpoint whose training weights were already loaded.

        Hyper-parameters (lr, momentum, weight decay, schedule) come from the current config,
        the optimizer's buffers and the iteration from the checkpoint: an unchanged config
        resumes exactly, a changed one (say solver.base_lr) takes effect from here.
        """
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group, h in zip(self.optimizer.param_groups, hyper, strict=True):
            group.update(h)
            group["initial_lr"] = h.get("initial_lr", h["lr"])
        if checkpoint.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.counters.iteration = int(checkpoint["iteration"])
        self.counters.nonfinite_steps = int(checkpoint.get("nonfinite_steps", 0))
        self.counters.skipped_files = int(checkpoint.get("skipped_files", 0))
        hook_states = checkpoint.get("hooks") or {}
        for hook in self.hooks:
            if type(hook).__name__ in hook_states:
                hook.load_state_dict(hook_states[type(hook).__name__])
        load_ema(self.ema, checkpoint)
        self._restore_rng(checkpoint)
        self.last_good_checkpoint = path

    @staticmethod
    def _restore_rng(checkpoint: dict[str, Any]) -> None:
        """Each rank gets its own RNG streams back (they differ after a few steps: sampling
        draws a different amount on each rank); with another process count, rank 0's."""
        per_rank = checkpoint.get("rng_per_rank")
        if per_rank and len(per_rank) == get_world_size():
            restore_rng_state(per_rank[get_rank()])
            return
        if per_rank and len(per_rank) != get_world_size():
            logger.warning("the checkpoint holds the RNG streams of %d processes, this run has "
                           "%d: every process continues from rank 0's (not bit-exact)",
                           len(per_rank), get_world_size())
        if "rng" in checkpoint:
            restore_rng_state(checkpoint["rng"])

    def save(self, path: Path | None = None) -> Path | None:
        """Write a checkpoint (default last.pt) on the main process; refuses to write
        non-finite weights (training or average). Every rank must call it (each contributes
        its RNG streams)."""
        rng_per_rank = all_gather_object(capture_rng_state())
        models = {"": self.model_without_ddp, "ema ": self.ema.module if self.ema else None}
        bad = [
            prefix + name
            for prefix, module in models.items() if module is not None
            for name, t in module.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())
        ]
        if bad:
            raise TrainingDiverged(
                f"iteration {self.iteration}: model weights are not finite ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}); not writing a checkpoint. "
                + self.last_good_message()
            )
        if not is_main_process():
            return None
        path = path or self.checkpoint_path
        save_checkpoint({**self.state_dict(), "rng_per_rank": rng_per_rank}, path)
        if path == self.checkpoint_path:
            self.last_good_checkpoint = path
        logger.info("iteration %d: saved %s", self.iteration, path)
        return path

    def last_good_message(self) -> str:
        if self.last_good_checkpoint is not None:
            return f"The last good checkpoint is {self.last_good_checkpoint}."
        return "No checkpoint was written by this run."

    # ---- the loop ------------------------------------------------------------------------

    def before_train(self) -> None:
        """Build the LR scheduler at the current iteration (0, or the resume point); remove
        a torn checkpoint write; tell the hooks."""
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, self.lr_multiplier, last_epoch=self.iteration - 1
        )
        if is_main_process():
            for tmp in remove_stale_temporaries(self.checkpoint_path):
                logger.warning("removed %s, left by an interrupted checkpoint write", tmp)
        for hook in self.hooks:
            hook.before_train(self)

    def train(self) -> dict[str, Any]:
        """Train to `max_iter` (or until a hook stops the run); returns the latest metrics
        (main process; other ranks get {}).

        Raises:
            TrainingInterrupted: SIGINT / SIGTERM; the checkpoint of the last finished
                iteration was saved first (rfcn.engine.interrupt).
            TrainingDiverged: too many consecutive non-finite steps.
        """
        logger.info("training iterations %d..%d on %s (world size %d)", self.iteration,
                    self.settings.max_iter, self.device, get_world_size())
        self.completed = False
        self.before_train()
        self.model.train()
        with StopRequest() as stop:
            try:
                self._loop(stop)
                self.completed = True
            finally:
                for hook in self.hooks:
                    hook.after_train(self)
        if self.stop_reason:
            logger.info("iteration %d: %s", self.iteration, self.stop_reason)
        return self.metrics

    def _loop(self, stop: StopRequest) -> None:
        data = iter(self.loader_factory(self.iteration))
        try:
            self._steps(data, stop)
        finally:
            _close(data)

    def _steps(self, data: Any, stop: StopRequest) -> None:
        while not self.last_step:
            try:
                batch = next(data)
            except Exception:
                # a signal sent to the whole process group may end the loader's workers
                # before this process sees it: stop as asked rather than fail
                if stop.signum is None:
                    raise
                batch = None
            # one check per iteration, before its step: a signal that came during the last
            # step (or while waiting for this batch) stops after the last finished iteration
            signum = stop.agreed(self.device) if batch is not None else stop.signum
            if signum is not None:
                self._interrupted(signum)
            result = self.run_step(batch)
            if self.iteration >= self.settings.max_iter:
                _close(data)  # its workers' memory is free for the final evaluation
                self.optimizer.zero_grad(set_to_none=True)  # and so are the gradients
            for hook in self.hooks:
                hook.after_step(self, result)

    def _interrupted(self, signum: int) -> None:
        """Save the state after the last finished iteration, then end the run."""
        path = None
        if self.iteration > 0 and not self.in_nonfinite_streak:
            path = self.save() or self.checkpoint_path
        raise TrainingInterrupted(signum, self.iteration, path)

    def run_step(self, batch: Any) -> StepResult:
        """One iteration: forward, the non-finite guard (agreed by all ranks), backward,
        optimizer and scheduler step. Raises TrainingDiverged after too many bad steps."""
        assert self.scheduler is not None, "call before_train() first"
        loss_dict = self._forward(batch)
        losses = sum(loss_dict.values())
        assert isinstance(losses, Tensor)
        finite = self._all_ranks_finite(losses)
        grad_norm = self._backward(losses) if finite else None
        finite = grad_norm is not None
        terms = {k: float(v.detach()) for k, v in loss_dict.items()}
        if not finite:
            self._nonfinite(terms)
        else:
            self.counters.consecutive_nonfinite = 0
            if self.ema is not None:
                self.ema.update(self.model_without_ddp)
        self.scheduler.step()
        self.counters.iteration += 1
        skipped = len(getattr(batch, "skipped", []))
        self.counters.skipped_files += skipped
        return StepResult(terms, float(losses.detach()), grad_norm, finite, skipped)

    @property
    def in_nonfinite_streak(self) -> bool:
        return self.counters.consecutive_nonfinite > 0

    def _nonfinite(self, terms: dict[str, float]) -> None:
        c = self.counters
        c.consecutive_nonfinite += 1
        c.nonfinite_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        text = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        logger.warning(
            "iteration %d: non-finite or exploding loss or gradient, step skipped "
            "(%d in a row, %d in total): %s",
            c.iteration + 1, c.consecutive_nonfinite, c.nonfinite_steps, text,
        )
        if c.consecutive_nonfinite >= self.settings.max_nonfinite_steps:
            raise TrainingDiverged(
                f"training stopped at iteration {c.iteration + 1}: {c.consecutive_nonfinite} "
                f"consecutive non-finite or exploding steps (losses: {text}; limit "
                f"train.max_loss={self.settings.max_loss:g}). The learning rate "
                "may be too high (solver.base_lr) or the data broken. "
                + self.last_good_message()
            )

    def _forward(self, batch: Any) -> dict[str, Tensor]:
        images = [img.to(self.device, non_blocking=True) for img in batch.images]
        targets = [
            {
                k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v
                for k, v in t.items()
            }
            for t in batch.targets
        ]
        amp = self.settings.amp_dtype is not None and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=self.settings.amp_dtype, enabled=amp):
            loss_dict = self.model(images, targets)
        return {k: v.float() for k, v in loss_dict.items()}

    def _all_ranks_finite(self, losses: Tensor) -> bool:
        """False when the loss is non-finite or above `max_loss` on any rank (every rank
        must take the same decision, or DDP's collectives would deadlock)."""
        loss = losses.detach()
        ok = torch.isfinite(loss) & (loss.abs() <= self.settings.max_loss)
        flag = ok.to(torch.float32).reshape(1)
        if is_distributed():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item() > 0)

    def _backward(self, losses: Tensor) -> float | None:
        """Backward + step; returns the gradient norm, or None (step skipped) when it is
        not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.settings.clip_grad_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        # The norm is of the averaged (all-reduced) gradients, so every rank agrees on it.
        if not bool(torch.isfinite(grad_norm)):
            if self.scaler.is_enabled():
                # fp16 overflow: the scaler skips the step and lowers its scale
                self.scaler.step(self.optimizer)
                self.scaler.update()
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(grad_norm)

    def run_evaluation(self, evaluate_fn: Callable[[nn.Module, int], dict[str, Any]]
                       ) -> dict[str, Any]:
        """`evaluate_fn(model, iteration)`, the model being the moving average when there is
        one (else `model_without_ddp`), without perturbing the training RNG streams (exact
        resume); the training model goes back to train mode."""
        rng = capture_rng_state()
        model = self.ema.module if self.ema is not None else self.model_without_ddp
        try:
            return evaluate_fn(model, self.iteration)
        finally:
            restore_rng_state(rng)
            self.model.train()
