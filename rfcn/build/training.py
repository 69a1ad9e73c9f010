"""The solver, the trainer's settings and hooks, and the trainer of a run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfcn import config as rc
from rfcn.build.data import TrainingData
from rfcn.engine.hooks import (
    BestCheckpointHook,
    CheckpointHook,
    CurvesHook,
    EvalHook,
    LogHook,
    ProgressHook,
    ScalarRecorder,
)
from rfcn.engine.solver import LRMultiplier, build_optimizer
from rfcn.engine.trainer import Trainer, TrainerSettings

logger = logging.getLogger(__name__)


def scaled_lr(solver_cfg: Any, world_size: int) -> float:
    """`base_lr`, scaled linearly to the total batch (ims_per_batch x processes) when
    `reference_batch` says which batch it was tuned for (detectron2's rule, Goyal et al.)."""
    base_lr = float(solver_cfg.base_lr)
    if not solver_cfg.reference_batch:
        return base_lr
    if solver_cfg.reference_batch < 1:
        raise ValueError(f"solver.reference_batch must be >= 1, got {solver_cfg.reference_batch}")
    total = int(solver_cfg.ims_per_batch) * world_size
    lr = base_lr * total / int(solver_cfg.reference_batch)
    logger.info("solver.reference_batch=%d: lr %.4g for a total batch of %d (%d images x %d "
                "processes; base_lr %.4g)", solver_cfg.reference_batch, lr, total,
                solver_cfg.ims_per_batch, world_size, base_lr)
    return lr


def build_solver(
    solver_cfg: Any, model: nn.Module, max_iter: int, world_size: int = 1
) -> tuple[torch.optim.Optimizer, LRMultiplier]:
    """The optimizer over the trainable parameters and the learning-rate schedule."""
    optimizer = build_optimizer(model, scaled_lr(solver_cfg, world_size), solver_cfg.momentum,
                                solver_cfg.weight_decay, name=rc.plain(solver_cfg.optimizer),
                                offset_lr_mult=float(solver_cfg.offset_lr_mult))
    schedule = LRMultiplier(
        max_iter=max_iter, schedule=rc.plain(solver_cfg.schedule),
        steps=tuple(int(s) for s in solver_cfg.steps), gamma=solver_cfg.gamma,
        warmup_iters=solver_cfg.warmup_iters, warmup_factor=solver_cfg.warmup_factor,
    )
    return optimizer, schedule


def trainer_settings(train_cfg: Any, amp_dtype: torch.dtype | None) -> TrainerSettings:
    """The loop settings: every TrainerSettings field of the same name in `train.*`."""
    values = {f.name: train_cfg[f.name] for f in fields(TrainerSettings) if f.name in train_cfg}
    return TrainerSettings(**values, amp_dtype=amp_dtype)


COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
VOC_METRICS = ("mAP", "mAP07", "AP50")


def build_hooks(
    train_cfg: Any,
    evaluate_fn: Callable[[nn.Module, int], dict[str, Any]],
    recorder: ScalarRecorder,
    output_dir: Path,
    dataset_name: str,
) -> list[Any]:
    """Progress, logging, evaluation (best checkpoint and early stopping when evaluating
    periodically, curves.png), checkpointing: in that order (see rfcn.engine.hooks)."""
    choices = VOC_METRICS if dataset_name == "voc" else COCO_METRICS
    if train_cfg.best_metric not in choices:
        raise ValueError(f"train.best_metric must be one of {choices} for dataset "
                         f"{dataset_name}, got {train_cfg.best_metric!r}")
    if train_cfg.early_stop_patience < 0:
        raise ValueError("train.early_stop_patience must be >= 0 (0: no early stopping), got "
                         f"{train_cfg.early_stop_patience}")
    eval_hook = EvalHook(train_cfg.eval_period, evaluate_fn, recorder)
    hooks: list[Any] = [ProgressHook(train_cfg.progress), LogHook(train_cfg.log_period, recorder),
                        eval_hook]
    if train_cfg.eval_period > 0:
        hooks.append(BestCheckpointHook(train_cfg.best_metric, train_cfg.early_stop_patience,
                                        eval_hook, output_dir / "checkpoints" / "best.pt"))
    elif train_cfg.early_stop_patience > 0:
        logger.warning("train.early_stop_patience needs train.eval_period > 0; ignored")
    if train_cfg.curves:
        hooks.append(CurvesHook(recorder, output_dir / "curves.png", eval_hook))
    hooks.append(CheckpointHook(train_cfg.checkpoint_period))
    return hooks


def build_trainer(
    *,
    cfg: Any,
    model: nn.Module,
    train_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_multiplier: LRMultiplier,
    loader_factory: Callable[[int], Any],
    hooks: list[Any],
    device: torch.device,
    output_dir: Path,
    amp_dtype: torch.dtype | None,
    data: TrainingData,
) -> Trainer:
    """The trainer, with what every checkpoint records about the run."""
    meta = {
        "model_spec": model.spec.to_dict(),
        "weights_backbone": cfg.model.weights_backbone,
        "class_names": data.class_names,
        "label_to_cat_id": data.label_to_cat_id,
        "config": rc.to_yaml(cfg),
        "architecture": model.spec.builder,
    }
    return Trainer(model=train_model, model_without_ddp=model, optimizer=optimizer,
                   lr_multiplier=lr_multiplier, loader_factory=loader_factory, device=device,
                   output_dir=output_dir, settings=trainer_settings(cfg.train, amp_dtype),
                   checkpoint_meta=meta, hooks=hooks)
