"""`train(cfg)`, behind tools/train.py: a short list of named steps."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from rfcn import assembly
from rfcn import config as rc
from rfcn.checkpoint import CheckpointError, load_checkpoint
from rfcn.engine.hooks import BestCheckpointHook
from rfcn.engine.trainer import Trainer
from rfcn.utils.distributed import (
    barrier,
    broadcast_object,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
)
from rfcn.utils.files import write_json
from rfcn.utils.process import configure_threads, seed_everything, setup_device

logger = logging.getLogger(__name__)


def train(cfg: Any, command_line: Sequence[str] | None = None) -> dict[str, Any]:
    """Train as configured; returns the final metrics (on the main process).

    With `train.resume=true` and a checkpoint in the run folder, `command_line` (the
    overrides typed, as tools/train.py passes them) decides the configuration: the run's own,
    from its checkpoint, with those keys overriding it. None: `cfg` as given, whole. A run
    already at `train.max_iter` returns its metrics.json with `already_finished` set.

    Raises:
        TrainingDiverged: after `train.max_nonfinite_steps` consecutive non-finite steps.
        TrainingInterrupted: SIGINT / SIGTERM (after saving the checkpoint).
        CheckpointError: a resume / fine-tune checkpoint that is unsafe or does not fit.
    """
    start = time.perf_counter()
    output_dir = rc.resolve_output_dir(cfg)
    device = setup_device(cfg.train.device)
    init_distributed(device)
    resume_path = output_dir / "checkpoints" / "last.pt"
    resume = _load_resume_checkpoint(resume_path) if cfg.train.resume else None
    if resume is not None and command_line is not None and resume.get("config"):
        cfg = _restored_config(cfg, resume, command_line, resume_path)
    if resume is not None and int(resume["iteration"]) >= cfg.train.max_iter:
        return _already_finished(cfg, resume, output_dir)
    # resolved once and stored with the run's config: a resume uses the same count (exact)
    cfg.train.num_threads = configure_threads(cfg.train.num_threads, cfg.train.num_workers)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)
    data = assembly.training_data(cfg.dataset)
    assembly.apply_auto_sizing(cfg, data.train)
    model = _build_or_restore_model(cfg, data, resume, resume_path).to(device)
    optimizer, lr_multiplier = assembly.build_solver(cfg.solver, model, cfg.train.max_iter,
                                                     get_world_size())
    writer = assembly.open_tensorboard(output_dir, cfg)
    try:
        trainer = assembly.build_trainer(cfg, model, optimizer, lr_multiplier, data, device,
                                         output_dir, writer)
        if resume is not None:
            trainer.load_training_state(resume, resume_path)
            logger.info("resumed from %s at iteration %d", resume_path, trainer.iteration)
        return _run(trainer, cfg, output_dir, start)
    finally:
        if writer is not None:
            writer.close()


def _restored_config(cfg: Any, resume: dict[str, Any], command_line: Sequence[str],
                     path: Path) -> Any:
    """The run's own configuration (its checkpoint's), overridden by what was typed."""
    restored, changes = rc.restore_run_config(cfg, resume["config"], command_line, str(path))
    logger.info("train.resume: continuing the configuration stored in %s", path)
    for change in changes:
        logger.info("train.resume: from the command line, %s", change)
    return restored


def _already_finished(cfg: Any, resume: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    iteration = int(resume["iteration"])
    logger.info("%s already finished at iteration %d (train.max_iter=%d): nothing to train",
                output_dir, iteration, cfg.train.max_iter)
    metrics: dict[str, Any] = {}
    if is_main_process() and (output_dir / "metrics.json").is_file():
        metrics = json.loads((output_dir / "metrics.json").read_text())
    return {**metrics, "already_finished": iteration, "max_iter": int(cfg.train.max_iter),
            "checkpoint": str(output_dir / "checkpoints" / "last.pt")}


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
    cfg: Any, data: assembly.TrainingData, resume: dict[str, Any] | None, resume_path: Path
) -> nn.Module:
    num_classes = len(data.class_names)
    if resume is not None:
        return assembly.resume_model(cfg.model, num_classes, resume, str(resume_path))
    if cfg.model.weights:
        source = f"model.weights={cfg.model.weights}"
        ckpt = load_checkpoint(os.path.expanduser(cfg.model.weights))
        return assembly.finetune_model(cfg.model, num_classes, ckpt, source)
    return assembly.build_model(cfg.model, num_classes)


def _run(trainer: Trainer, cfg: Any, output_dir: Path, start: float) -> dict[str, Any]:
    metrics = trainer.train()
    if is_main_process():
        # wall_s: this invocation, start-up to the final evaluation (a resumed run: its part)
        metrics = {**metrics, "iteration": trainer.iteration, "dataset": cfg.dataset.name,
                   "checkpoint": str(trainer.checkpoint_path),
                   "wall_s": round(time.perf_counter() - start, 1)}
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
