"""`train(cfg)`, behind tools/train.py: a short list of named steps."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from rfcn import build
from rfcn import config as rc
from rfcn.engine.checkpoint import CheckpointError, load_checkpoint
from rfcn.engine.distributed import (
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    wrap_ddp,
)
from rfcn.engine.evaluation import evaluate_model, tensorboard_eval_extras
from rfcn.engine.hooks import BestCheckpointHook, ScalarRecorder
from rfcn.engine.json_files import write_json
from rfcn.engine.process import amp_dtype, seed_everything, setup_process
from rfcn.engine.trainer import Trainer

logger = logging.getLogger(__name__)


def train(cfg: Any) -> dict[str, Any]:
    """Train as configured; returns the final metrics (on the main process).

    Raises:
        TrainingDiverged: after `train.max_nonfinite_steps` consecutive non-finite steps.
        CheckpointError: a resume / fine-tune checkpoint that is unsafe or does not fit.
    """
    output_dir = rc.resolve_output_dir(cfg)
    device = setup_process(cfg.train.device, cfg.train.num_threads, cfg.train.num_workers)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)
    data = build.training_data(cfg.dataset)
    build.apply_auto_sizing(cfg, data.train)
    resume_path = output_dir / "checkpoints" / "last.pt"
    resume = _load_resume_checkpoint(resume_path) if cfg.train.resume else None
    model = _build_or_restore_model(cfg, data, resume, resume_path).to(device)
    optimizer, lr_multiplier = build.build_solver(cfg.solver, model, cfg.train.max_iter,
                                                  get_world_size())
    writer = _open_tensorboard(output_dir, cfg)
    try:
        trainer = _build_trainer(cfg, model, optimizer, lr_multiplier, data, device,
                                 output_dir, writer)
        if resume is not None:
            trainer.load_training_state(resume, resume_path)
            logger.info("resumed from %s at iteration %d", resume_path, trainer.iteration)
        return _run(trainer, cfg, output_dir)
    finally:
        if writer is not None:
            writer.close()


def _load_resume_checkpoint(path: Path) -> dict[str, Any] | None:
    """last.pt as the main process reads it, on every rank (None: no checkpoint yet).

    Only the main process writes checkpoints, so on several nodes without a shared run
    directory the other nodes have no (or an old) last.pt: rank 0 reads the file and sends
    it to the other ranks over the process group, and every rank resumes from the same
    iteration. A checkpoint rank 0 refuses is refused on every rank (no rank left waiting).
    """
    result: tuple[str, Any] = ("none", None)
    if is_main_process():
        if path.is_file():
            try:
                result = ("ok", load_checkpoint(path))
            except (CheckpointError, OSError) as e:
                result = ("error", e)
        else:
            logger.info("train.resume: no %s yet, starting from scratch", path)
    if is_distributed():  # our own ranks' objects, never a file: safe to unpickle
        result = broadcast_object(result if is_main_process() else None)
    status, payload = result
    if status == "error":
        raise payload if is_main_process() else CheckpointError(f"rank 0: {payload}")
    return payload if status == "ok" else None


def _build_or_restore_model(
    cfg: Any, data: build.TrainingData, resume: dict[str, Any] | None, resume_path: Path
) -> nn.Module:
    num_classes = len(data.class_names)
    if resume is not None:
        return build.resume_model(cfg.model, num_classes, resume, str(resume_path))
    if cfg.model.weights:
        source = f"model.weights={cfg.model.weights}"
        ckpt = load_checkpoint(os.path.expanduser(cfg.model.weights))
        return build.finetune_model(cfg.model, num_classes, ckpt, source)
    return build.build_model(cfg.model, num_classes)


def _open_tensorboard(output_dir: Path, cfg: Any) -> Any:
    if not is_main_process():
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(output_dir))
    writer.add_text("config", "```\n" + rc.to_yaml(cfg) + "\n```", 0)
    return writer


def _build_trainer(
    cfg: Any, model: nn.Module, optimizer: Any, lr_multiplier: Any, data: build.TrainingData,
    device: Any, output_dir: Path, writer: Any,
) -> Trainer:
    amp = amp_dtype(rc.plain(cfg.train.amp), device)
    evaluator = build.build_evaluator(data.name, data.val)

    def evaluate_fn(eval_model: nn.Module, iteration: int) -> dict[str, Any]:
        metrics = evaluate_model(eval_model, data.val, evaluator, device,
                                 cfg.train.num_workers, amp)
        if writer is not None and metrics:
            tensorboard_eval_extras(writer, eval_model, data.val, evaluator, device, iteration,
                                    cfg.train.num_vis_images)
        return metrics

    transforms = build.build_train_transforms(cfg.aug, model)
    loader_factory = build.train_loader_factory(cfg, data.train, transforms, get_rank(),
                                                get_world_size())
    hooks = build.build_hooks(cfg.train, evaluate_fn, ScalarRecorder(writer), output_dir,
                              data.name)
    train_model = wrap_ddp(model, device, cfg.solver.ims_per_batch)
    return build.build_trainer(cfg=cfg, model=model, train_model=train_model,
                               optimizer=optimizer, lr_multiplier=lr_multiplier,
                               loader_factory=loader_factory, hooks=hooks, device=device,
                               output_dir=output_dir, amp_dtype=amp, data=data)


def _run(trainer: Trainer, cfg: Any, output_dir: Path) -> dict[str, Any]:
    metrics = trainer.train()
    if is_main_process():
        metrics = {**metrics, "iteration": trainer.iteration, "dataset": cfg.dataset.name,
                   "checkpoint": str(trainer.checkpoint_path)}
        if trainer.stop_reason:
            metrics["stopped_early"] = trainer.stop_reason
        best = next((h.summary() for h in trainer.hooks if isinstance(h, BestCheckpointHook)),
                    None)
        if best is not None:
            metrics["best"] = best
        write_json(output_dir / "metrics.json", metrics)
        logger.info("wrote %s", output_dir / "metrics.json")
    barrier()
    return metrics
