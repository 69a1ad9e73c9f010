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
from rfcn.assembly.data import (
    TrainingData,
    build_evaluator,
    build_train_transforms,
    train_loader_factory,
)
from rfcn.engine.ema import ModelEMA
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
from rfcn.evaluation import COCO_METRIC_NAMES, VOC_METRIC_NAMES, evaluate_model
from rfcn.models.spec import RFCNSpec
from rfcn.utils.distributed import get_rank, get_world_size, is_main_process, wrap_ddp
from rfcn.utils.process import amp_dtype
from rfcn.visualization import tensorboard_eval_extras

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


COCO_METRICS = COCO_METRIC_NAMES
VOC_METRICS = VOC_METRIC_NAMES


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


def open_tensorboard(output_dir: Path, cfg: Any) -> Any:
    """The run's TensorBoard writer (main process; None elsewhere), with the config as text."""
    if not is_main_process():
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(output_dir))
    writer.add_text("config", "```\n" + rc.to_yaml(cfg) + "\n```", 0)
    return writer


def _evaluate_fn(cfg: Any, data: TrainingData, device: torch.device, amp: torch.dtype | None,
                 writer: Any) -> Callable[[nn.Module, int], dict[str, Any]]:
    """What the evaluation hook calls: metrics on the val split, extras to TensorBoard."""
    evaluator = build_evaluator(data.name, data.val)

    def evaluate_fn(eval_model: nn.Module, iteration: int) -> dict[str, Any]:
        metrics = evaluate_model(eval_model, data.val, evaluator, device,
                                 cfg.train.num_workers, amp)
        if writer is not None and metrics:
            tensorboard_eval_extras(writer, eval_model, data.val, evaluator, device, iteration,
                                    cfg.train.num_vis_images)
        evaluator.release()  # the ground-truth index and COCOeval state until next time
        return metrics

    return evaluate_fn


def build_trainer(
    cfg: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_multiplier: LRMultiplier,
    data: TrainingData,
    device: torch.device,
    output_dir: Path,
    writer: Any,
    spec: RFCNSpec | None = None,
) -> Trainer:
    """The trainer of a run: its loader, hooks (evaluation on `data.val`), the DDP wrapper,
    the moving average of the weights (`train.ema`), and what every checkpoint records about
    the run. `spec`: the image sizes of a model that is not an R-FCN (the torchvision peer,
    rfcn.assembly.peer), whose checkpoints then record no R-FCN spec."""
    amp = amp_dtype(rc.plain(cfg.train.amp), device)
    own_spec = getattr(model, "spec", None)
    sizes_spec = own_spec if own_spec is not None else spec
    if sizes_spec is None:
        raise TypeError("build_trainer: a model without .spec needs spec= (its image sizes)")
    transforms = build_train_transforms(cfg.aug, sizes_spec)
    loader_factory = train_loader_factory(cfg, data.train, transforms, get_rank(),
                                          get_world_size(), pin_memory=device.type == "cuda")
    hooks = build_hooks(cfg.train, _evaluate_fn(cfg, data, device, amp, writer),
                        ScalarRecorder(writer), output_dir, data.name)
    meta = {
        "model_spec": own_spec.to_dict() if own_spec is not None else None,
        "weights_backbone": cfg.model.weights_backbone,
        "class_names": data.class_names,
        "label_to_cat_id": data.label_to_cat_id,
        "config": rc.to_yaml(cfg),
        "architecture": own_spec.builder if own_spec is not None else type(model).__name__,
    }
    ddp_model = wrap_ddp(model, device, cfg.solver.ims_per_batch)
    # after the wrapper: DDP gives every process rank 0's weights, the average starts from them
    ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_tau) if cfg.train.ema else None
    return Trainer(model=ddp_model, model_without_ddp=model, optimizer=optimizer,
                   lr_multiplier=lr_multiplier, loader_factory=loader_factory, device=device,
                   output_dir=output_dir, settings=trainer_settings(cfg.train, amp),
                   checkpoint_meta=meta, hooks=hooks, ema=ema)
