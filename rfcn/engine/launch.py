"""The training entry point behind tools/train.py, `train(cfg)`, and the process setup and
dataset evaluation it shares with `rfcn.engine.predict` (`evaluate(cfg)`, `infer(cfg)`).

Entry points take a composed config (tools/*.py pass Hydra's; tests compose one with Hydra's
compose API), build everything through `rfcn.config` and run. Results go to the output
directory; nothing is printed (the tools print the returned tables).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rfcn import config as rc
from rfcn.engine.checkpoint import CheckpointError, load_checkpoint, load_model_state
from rfcn.engine.distributed import (
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    local_rank,
)
from rfcn.engine.evaluator import inference_on_dataset
from rfcn.engine.trainer import Trainer, TrainerSettings
from rfcn.engine.visualize import draw_detections
from rfcn.models.inference import inference_copy

logger = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---- shared setup -------------------------------------------------------------------------


def setup_device(name: str) -> torch.device:
    """The device of this process (cuda:LOCAL_RANK under torchrun)."""
    device = rc.resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    return device


def configure_threads(num_threads: int | None, num_workers: int) -> int:
    """Intra-op threads: the requested number, else this process's share of the cores.

    Data workers mostly wait on JPEG decoding, so they are not subtracted; processes started
    by torchrun split the cores between them.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = num_threads or max(1, cores // local_world)
    torch.set_num_threads(threads)
    # OpenCV's thread pool does not survive fork(): a data worker forked while the pool is
    # live can deadlock in its first cv2 call. One OpenCV thread in the main process (it only
    # draws and, once, generates the synthetic data) keeps the pool from ever starting.
    import cv2

    cv2.setNumThreads(1)
    if threads * local_world > cores:
        logger.warning(
            "%d threads x %d processes on %d cores: oversubscribed, expect slow steps",
            threads,
            local_world,
            cores,
        )
    logger.info(
        "torch threads %d (cores %d, processes on this node %d, data workers %d per process)",
        threads,
        cores,
        local_world,
        num_workers,
    )
    return threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def class_check(ckpt_classes: list[str], dataset_classes: list[str], where: str) -> None:
    if list(ckpt_classes) != list(dataset_classes):
        raise ValueError(
            f"{where}: the checkpoint's classes {list(ckpt_classes)[1:]} differ from the "
            f"dataset's {list(dataset_classes)[1:]}"
        )


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    dataset_name: str,
    device: torch.device,
    num_workers: int,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[dict[str, Any], Any]:
    from rfcn.data.loader import build_test_loader

    evaluator = rc.build_evaluator(dataset_name, dataset)
    loader = build_test_loader(
        dataset,
        1,
        num_workers=num_workers,
        rank=get_rank(),
        world_size=get_world_size(),
    )
    amp = autocast_dtype if device.type == "cuda" else None
    # BatchNorm folded, channels-last: the same detections, faster (rfcn.models.inference)
    metrics = inference_on_dataset(inference_copy(model), loader, evaluator, device,
                                   autocast_dtype=amp)
    return metrics, evaluator


def _tensorboard_eval_extras(
    writer: Any,
    model: nn.Module,
    dataset: Any,
    evaluator: Any,
    device: torch.device,
    iteration: int,
    num_images: int,
) -> None:
    """Sample images with predicted boxes and per-class PR curves."""
    for name, (recall, precision) in getattr(evaluator, "pr_curves", {}).items():
        order = np.argsort(-np.asarray(recall), kind="stable")  # descending recall
        rec = np.asarray(recall, dtype=np.float64)[order]
        prec = np.asarray(precision, dtype=np.float64)[order]
        zeros = np.zeros(len(rec))
        writer.add_pr_curve_raw(
            f"pr_curve/{name}",
            zeros,
            zeros,
            zeros,
            zeros,
            prec,
            rec,
            iteration,
            num_thresholds=len(rec),
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(min(num_images, len(dataset))):
                image, _ = dataset[i]
                out = model([image.to(device)])[0]
                canvas = (image.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
                drawn = draw_detections(
                    canvas,
                    out["boxes"].cpu(),
                    out["labels"].cpu(),
                    out["scores"].cpu(),
                    dataset.class_names,
                    score_thresh=0.3,
                )
                writer.add_image(f"predictions/{i}", drawn, iteration, dataformats="HWC")
    finally:
        model.train(was_training)
    writer.flush()


# ---- train ---------------------------------------------------------------------------------


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


def train(cfg: Any) -> dict[str, Any]:
    """Train as configured; returns the final metrics (on the main process).

    Raises:
        TrainingDiverged: after `train.max_nonfinite_steps` consecutive non-finite steps.
    """
    from rfcn.data.loader import build_train_loader

    output_dir = rc.resolve_output_dir(cfg)
    device = setup_device(cfg.train.device)
    init_distributed(device)
    rank, world_size = get_rank(), get_world_size()
    configure_threads(cfg.train.num_threads, cfg.train.num_workers)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)

    train_ds, val_ds = rc.build_datasets(cfg.dataset)
    class_names = list(train_ds.class_names)
    if list(val_ds.class_names) != class_names:
        raise ValueError(
            f"train and val splits have different classes: {class_names[1:]} vs "
            f"{list(val_ds.class_names)[1:]}"
        )
    label_to_cat_id = {int(k): int(v) for k, v in train_ds.label_to_cat_id.items()}
    logger.info(
        "dataset %s: %d train / %d val images, %d classes",
        cfg.dataset.name,
        len(train_ds),
        len(val_ds),
        len(class_names) - 1,
    )

    resume_path = output_dir / "checkpoints" / "last.pt"
    resume_ckpt = _load_resume_checkpoint(resume_path) if cfg.train.resume else None
    finetune_ckpt = None
    if cfg.model.weights and resume_ckpt is None:
        finetune_ckpt = load_checkpoint(os.path.expanduser(cfg.model.weights))

    model = rc.build_model(
        cfg.model,
        len(class_names),
        load_backbone=resume_ckpt is None and finetune_ckpt is None,
    )
    if finetune_ckpt is not None:
        load_model_state(
            model,
            finetune_ckpt,
            allow_class_change=True,
            architecture=cfg.model.name,
            source=f"model.weights={cfg.model.weights}",
        )
        logger.info("fine-tuning from %s", cfg.model.weights)
    if resume_ckpt is not None:
        load_model_state(model, resume_ckpt, architecture=cfg.model.name, source=str(resume_path))
    model.to(device)

    optimizer, scheduler = rc.build_solver(cfg.solver, model, cfg.train.max_iter)
    transforms = rc.build_train_transforms(cfg.aug, cfg.model, model)

    writer = None
    if is_main_process():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(output_dir))
        writer.add_text("config", "```\n" + rc.to_yaml(cfg) + "\n```", 0)

    amp_dtype = AMP_DTYPES.get(cfg.train.amp)
    if cfg.train.amp not in AMP_DTYPES:
        raise ValueError(f"train.amp must be one of {sorted(AMP_DTYPES)}, got {cfg.train.amp!r}")
    if amp_dtype is not None and device.type != "cuda":
        logger.warning("train.amp=%s applies to CUDA only; training in float32", cfg.train.amp)

    def loader_factory(start_iter: int) -> Any:
        return build_train_loader(
            train_ds,
            cfg.solver.ims_per_batch,
            seed=cfg.train.seed,
            start_iter=start_iter,
            num_workers=cfg.train.num_workers,
            strict=cfg.dataset.strict,
            rank=rank,
            world_size=world_size,
            transforms=transforms,
        )

    def evaluate_fn(eval_model: nn.Module, iteration: int) -> dict[str, Any]:
        metrics, evaluator = evaluate_model(
            eval_model, val_ds, cfg.dataset.name, device, cfg.train.num_workers, amp_dtype
        )
        if writer is not None and metrics:
            _tensorboard_eval_extras(
                writer, eval_model, val_ds, evaluator, device, iteration, cfg.train.num_vis_images
            )
        return metrics

    train_model: nn.Module = model
    if is_distributed():
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            if device.type == "cuda":  # statistics over the global batch (same parameters)
                nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:  # torch's SyncBatchNorm runs on GPUs only
                logger.info("BatchNorm on CPU normalises each process's own batch of %d "
                            "images (SyncBatchNorm needs CUDA)", cfg.solver.ims_per_batch)
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    trainer = Trainer(
        train_model,
        model,
        optimizer,
        scheduler,
        loader_factory,
        evaluate_fn,
        device,
        output_dir,
        TrainerSettings(
            max_iter=cfg.train.max_iter,
            eval_period=cfg.train.eval_period,
            checkpoint_period=cfg.train.checkpoint_period,
            amp_dtype=amp_dtype,
            clip_grad_norm=cfg.train.clip_grad_norm,
            max_nonfinite_steps=cfg.train.max_nonfinite_steps,
            max_loss=cfg.train.max_loss,
            log_period=cfg.train.log_period,
            progress=cfg.train.progress,
        ),
        checkpoint_meta={
            "class_names": class_names,
            "label_to_cat_id": label_to_cat_id,
            "config": rc.to_yaml(cfg),
            "architecture": cfg.model.name,
        },
        writer=writer,
    )
    if resume_ckpt is not None:
        trainer.load_training_state(resume_ckpt)
        trainer.last_good_checkpoint = resume_path
        logger.info("resumed from %s at iteration %d", resume_path, trainer.iteration)
    try:
        metrics = trainer.train()
        if is_main_process():
            metrics = {
                **metrics,
                "iteration": trainer.iteration,
                "dataset": cfg.dataset.name,
                "checkpoint": str(trainer.checkpoint_path),
            }
            write_json(output_dir / "metrics.json", metrics)
            logger.info("wrote %s", output_dir / "metrics.json")
        barrier()
        return metrics
    finally:
        if writer is not None:
            writer.close()
