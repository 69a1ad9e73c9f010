"""The training loop: SGD steps with optional AMP and clipping, non-finite guards, periodic
checkpointing and evaluation, TensorBoard and tqdm.

The trainer receives built objects (model, optimizer, scheduler, a loader factory, an
evaluation callable) and plain settings; `rfcn.engine.launch.train` builds them from a config.
Resuming is exact because every source of randomness is either restored from the checkpoint
(torch / numpy / python RNG) or a pure function of (seed, iteration) (the data loader).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rfcn.engine.checkpoint import (
    capture_rng_state,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from rfcn.engine.distributed import get_world_size, is_distributed, is_main_process

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the message names the last good checkpoint."""


@dataclass
class TrainerSettings:
    max_iter: int
    eval_period: int = 0  # 0: only after the last iteration
    checkpoint_period: int = 500
    amp_dtype: torch.dtype | None = None  # autocast dtype on CUDA (fp16 uses a GradScaler)
    clip_grad_norm: float | None = None
    max_nonfinite_steps: int = 5
    max_loss: float = 1e4  # a larger (finite) total loss counts as exploded, like NaN/inf
    log_period: int = 20
    progress: bool = True


class Trainer:
    """Runs iterations `[start_iter, max_iter)`.

    Args:
        model: the detector (possibly DDP-wrapped); train mode returns `dict[str, Tensor]`
            of `loss_*`.
        model_without_ddp: the bare module (its state dict goes into checkpoints).
        loader_factory: `start_iter -> iterable of batches` (`.images`, `.targets`,
            `.skipped`); batch i must depend only on (seed, i).
        evaluate_fn: `(model_without_ddp, iteration) -> metrics` (all ranks call it).
        checkpoint_meta: extra entries stored in every checkpoint (class_names,
            label_to_cat_id, config, architecture).
        writer: a TensorBoard SummaryWriter on the main process, None elsewhere.
    """

    def __init__(
        self,
        model: nn.Module,
        model_without_ddp: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        loader_factory: Callable[[int], Iterable[Any]],
        evaluate_fn: Callable[[nn.Module, int], dict[str, Any]],
        device: torch.device,
        output_dir: Path,
        settings: TrainerSettings,
        checkpoint_meta: dict[str, Any],
        writer: Any | None = None,
    ) -> None:
        self.model = model
        self.model_without_ddp = model_without_ddp
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader_factory = loader_factory
        self.evaluate_fn = evaluate_fn
        self.device = device
        self.output_dir = Path(output_dir)
        self.settings = settings
        self.checkpoint_meta = checkpoint_meta
        self.writer = writer
        use_scaler = device.type == "cuda" and settings.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.iteration = 0
        self.nonfinite_steps = 0
        self.skipped_files = 0
        self.last_good_checkpoint: Path | None = None

    # ---- state ---------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / "checkpoints" / "last.pt"

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.checkpoint_meta,
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "nonfinite_steps": self.nonfinite_steps,
            "skipped_files": self.skipped_files,
            "rng": capture_rng_state(),
            "format_version": 1,
        }

    def load_training_state(self, checkpoint: dict[str, Any]) -> None:
        """Optimizer, scheduler, scaler, counters and RNG from a checkpoint whose model
        weights were already loaded."""
        # Hyper-parameters (lr, momentum, weight decay, schedule) come from the current
        # config, the optimizer's buffers and the iteration from the checkpoint: an unchanged
        # config resumes exactly, a changed one (say solver.base_lr) takes effect.
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group, h in zip(self.optimizer.param_groups, hyper, strict=True):
            group.update(h)
        sched_state = dict(checkpoint["scheduler"])
        sched_state["lr_lambdas"] = [None] * len(self.scheduler.lr_lambdas)
        sched_state["base_lrs"] = [h["initial_lr"] for h in hyper]
        self.scheduler.load_state_dict(sched_state)
        step = self.scheduler.last_epoch
        for group, base, fn in zip(
            self.optimizer.param_groups,
            self.scheduler.base_lrs,
            self.scheduler.lr_lambdas,
            strict=True,
        ):
            group["lr"] = base * fn(step)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        if checkpoint.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.iteration = int(checkpoint["iteration"])
        self.nonfinite_steps = int(checkpoint.get("nonfinite_steps", 0))
        self.skipped_files = int(checkpoint.get("skipped_files", 0))
        if "rng" in checkpoint:
            restore_rng_state(checkpoint["rng"])

    def save(self) -> None:
        """Write last.pt (main process); refuses to replace a checkpoint with non-finite
        weights."""
        if not is_main_process():
            return
        bad = [
            name
            for name, t in self.model_without_ddp.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())
        ]
        if bad:
            raise TrainingDiverged(
                f"iteration {self.iteration}: model weights are not finite ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}); not writing a checkpoint. "
                + self._last_good_message()
            )
        save_checkpoint(self.state_dict(), self.checkpoint_path)
        self.last_good_checkpoint = self.checkpoint_path
        logger.info("iteration %d: saved %s", self.iteration, self.checkpoint_path)

    def _last_good_message(self) -> str:
        if self.last_good_checkpoint is not None:
            return f"The last good checkpoint is {self.last_good_checkpoint}."
        return "No checkpoint was written by this run."

    # ---- the loop ------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Train to `max_iter`, evaluate, checkpoint; returns the final metrics (main process;
        other ranks get {})."""
        s = self.settings
        start_iter = self.iteration
        logger.info(
            "training iterations %d..%d on %s (world size %d)",
            start_iter,
            s.max_iter,
            self.device,
            get_world_size(),
        )
        if is_main_process():
            for tmp in remove_stale_temporaries(self.checkpoint_path):
                logger.warning("removed %s, left by an interrupted checkpoint write", tmp)
        self.model.train()
        data: Iterator[Any] = iter(self.loader_factory(start_iter))
        progress = self._progress(start_iter)
        consecutive_nonfinite = 0
        window: dict[str, float] = {}
        window_n = 0
        start_time = time.perf_counter()
        metrics: dict[str, Any] = {}
        try:
            for it in range(start_iter, s.max_iter):
                batch = next(data)
                loss_dict = self._forward(batch)
                losses = sum(loss_dict.values())
                assert isinstance(losses, Tensor)
                finite = self._all_ranks_finite(losses)
                grad_norm = None
                if finite:
                    grad_norm = self._backward(losses)
                    finite = grad_norm is not None
                if not finite:
                    consecutive_nonfinite += 1
                    self.nonfinite_steps += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in loss_dict.items())
                    logger.warning(
                        "iteration %d: non-finite or exploding loss or gradient, step skipped "
                        "(%d in a row, %d in total): %s",
                        it + 1,
                        consecutive_nonfinite,
                        self.nonfinite_steps,
                        terms,
                    )
                    if consecutive_nonfinite >= s.max_nonfinite_steps:
                        raise TrainingDiverged(
                            f"training stopped at iteration {it + 1}: {consecutive_nonfinite} "
                            f"consecutive non-finite or exploding steps (losses: {terms}; limit "
                            f"train.max_loss={s.max_loss:g}). The learning rate "
                            "may be too high (solver.base_lr) or the data broken. "
                            + self._last_good_message()
                        )
                else:
                    consecutive_nonfinite = 0
                self.scheduler.step()
                self.iteration = it + 1
                self.skipped_files += len(getattr(batch, "skipped", []))
                if finite:
                    for k, v in loss_dict.items():
                        window[k] = window.get(k, 0.0) + float(v.detach())
                    window["loss"] = window.get("loss", 0.0) + float(losses.detach())
                    window_n += 1
                if progress is not None:
                    progress.update(1)
                    if window_n:
                        progress.set_postfix(
                            loss=f"{window['loss'] / window_n:.3f}",
                            lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                        )
                if self.iteration % s.log_period == 0 or self.iteration == s.max_iter:
                    self._log(window, window_n, grad_norm, start_time, start_iter)
                    window, window_n = {}, 0
                last = self.iteration == s.max_iter
                if last or (s.checkpoint_period > 0 and self.iteration % s.checkpoint_period == 0):
                    if consecutive_nonfinite == 0:
                        self.save()
                    else:  # weights that just produced a non-finite loss are not "good"
                        logger.warning(
                            "iteration %d: checkpoint deferred (non-finite streak)", self.iteration
                        )
                if last or (s.eval_period > 0 and self.iteration % s.eval_period == 0):
                    metrics = self._evaluate()
        finally:
            if progress is not None:
                progress.close()
        if start_iter >= s.max_iter:  # nothing left to train: still report the metrics
            metrics = self._evaluate()
        return metrics

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

    def _evaluate(self) -> dict[str, Any]:
        # Evaluation must not perturb the training RNG streams (exact resume).
        rng = capture_rng_state()
        try:
            metrics = self.evaluate_fn(self.model_without_ddp, self.iteration)
        finally:
            restore_rng_state(rng)
            self.model.train()
        if self.writer is not None and metrics:
            for k, v in metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "num_images":
                    self.writer.add_scalar(f"eval/{k}", v, self.iteration)
            for name, ap in (metrics.get("per_class") or {}).items():
                if ap is not None:
                    self.writer.add_scalar(f"eval_per_class/{name}", ap, self.iteration)
            self.writer.flush()
        return metrics

    def _log(
        self,
        window: dict[str, float],
        n: int,
        grad_norm: float | None,
        start_time: float,
        start_iter: int,
    ) -> None:
        if not is_main_process():
            return
        lr = self.optimizer.param_groups[0]["lr"]
        done = self.iteration - start_iter
        elapsed = time.perf_counter() - start_time
        eta = elapsed / max(done, 1) * (self.settings.max_iter - self.iteration)
        means = {k: v / n for k, v in window.items()} if n else {}
        logger.info(
            "iter %d/%d  %s  lr %.3g  %.2fs/it  eta %ds",
            self.iteration,
            self.settings.max_iter,
            "  ".join(f"{k} {v:.4f}" for k, v in means.items()),
            lr,
            elapsed / max(done, 1),
            int(eta),
        )
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train/{k}", v, self.iteration)
            self.writer.add_scalar("train/lr", lr, self.iteration)
            if grad_norm is not None:
                self.writer.add_scalar("train/grad_norm", grad_norm, self.iteration)
            self.writer.add_scalar("train/nonfinite_steps", self.nonfinite_steps, self.iteration)
            self.writer.add_scalar("data/skipped_files", self.skipped_files, self.iteration)

    def _progress(self, start_iter: int) -> Any:
        if not (self.settings.progress and is_main_process()):
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.settings.max_iter,
            initial=start_iter,
            desc="train",
            dynamic_ncols=True,
            smoothing=0.1,
        )
