"""Turn a composed config into objects: datasets, the model (fresh, fine-tuned or restored),
the solver, transforms, evaluators, the trainer and its hooks.

The one seam between configuration (rfcn.config) and running (rfcn.engine): only tools/ and
the entry points (rfcn.entrypoints) import this module, and nothing it builds keeps a config.

How the model is decided (DESIGN §6): a fresh run resolves its `RFCNSpec` from the model
config once (`config_spec`); every checkpoint stores it. Resume rebuilds the checkpoint's spec
exactly (a config that now says otherwise is warned about, not obeyed); fine-tuning keeps the
checkpoint's architecture (trunk depth and norm, trainable stages, k, head, anchors) with the
new data's class count and the config's settings (sizes, thresholds, sampling); eval, infer and
export rebuild the checkpoint's spec. Checkpoints older than the spec (format 1) are rebuilt
from the config they store, with the rule that wrote them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

import rfcn.models
from rfcn import config as rc
from rfcn.data import CocoDetection, ConcatDetection, VOCDetection
from rfcn.data.loader import build_train_loader
from rfcn.data.synthetic import ensure_synthetic_dataset
from rfcn.data.transforms import build_train_transforms as _train_transforms
from rfcn.engine.checkpoint import CheckpointError, load_model_state
from rfcn.engine.coco_eval import CocoEvaluator
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
from rfcn.engine.voc_eval import VOCEvaluator
from rfcn.models import RFCN
from rfcn.models.builders import rfcn_from_spec
from rfcn.models.spec import ARCHITECTURE, RFCNSpec

logger = logging.getLogger(__name__)

MODEL_BUILDERS = ("rfcn_resnet18", "rfcn_resnet50", "rfcn_resnet101")


# ---- data ----------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The two splits of a training run and the class mapping they share."""

    name: str
    train: Any
    val: Any

    @property
    def class_names(self) -> list[str]:
        return list(self.train.class_names)

    @property
    def label_to_cat_id(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.train.label_to_cat_id.items()}


def training_data(dataset_cfg: Any) -> TrainingData:
    """Both splits, checked to have the same classes."""
    train, val = build_datasets(dataset_cfg)
    if list(val.class_names) != list(train.class_names):
        raise ValueError(f"train and val splits have different classes: "
                         f"{list(train.class_names)[1:]} vs {list(val.class_names)[1:]}")
    logger.info("dataset %s: %d train / %d val images, %d classes", dataset_cfg.name,
                len(train), len(val), len(train.class_names) - 1)
    return TrainingData(str(dataset_cfg.name), train, val)


def build_datasets(dataset_cfg: Any) -> tuple[Any, Any]:
    """(train dataset, evaluation dataset) for `dataset_cfg.name`."""
    name = dataset_cfg.name
    if name == "synthetic":
        splits = ensure_synthetic_dataset(
            os.path.expanduser(dataset_cfg.root), num_train=dataset_cfg.num_train,
            num_val=dataset_cfg.num_val, image_size=dataset_cfg.image_size,
            seed=dataset_cfg.seed,
        )
        return CocoDetection(*splits["train"]), CocoDetection(*splits["val"])
    if name == "voc":
        root = os.path.expanduser(dataset_cfg.root)
        parts = [VOCDetection(root, *_voc_set(s)) for s in dataset_cfg.train_sets]
        train = parts[0] if len(parts) == 1 else ConcatDetection(parts)
        return train, build_eval_dataset(dataset_cfg)
    if name == "coco":
        return _coco_split(dataset_cfg, dataset_cfg.train_split), build_eval_dataset(dataset_cfg)
    if name == "coco_json":
        tr = dataset_cfg.train
        train = CocoDetection(os.path.expanduser(tr.img_dir), os.path.expanduser(tr.ann_file))
        return train, build_eval_dataset(dataset_cfg)
    raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(rc.DATASET_SCHEMAS)}")


def build_eval_dataset(dataset_cfg: Any) -> Any:
    """Only the evaluation split (the training split is not opened for VOC/COCO/coco_json)."""
    name = dataset_cfg.name
    if name == "coco":
        return _coco_split(dataset_cfg, dataset_cfg.val_split)
    if name == "coco_json":
        va = dataset_cfg.val
        return CocoDetection(os.path.expanduser(va.img_dir), os.path.expanduser(va.ann_file))
    if name == "voc":
        return VOCDetection(os.path.expanduser(dataset_cfg.root), *_voc_set(dataset_cfg.test_set))
    return build_datasets(dataset_cfg)[1]


def _coco_split(dataset_cfg: Any, split: str) -> CocoDetection:
    root = Path(os.path.expanduser(dataset_cfg.root))
    return CocoDetection(str(root / split), str(root / "annotations" / f"instances_{split}.json"))


def _voc_set(spec: str) -> tuple[str, str]:
    """ "2007_trainval" → ("2007", "trainval")."""
    year, _, image_set = str(spec).partition("_")
    if not year or not image_set:
        raise ValueError(f"VOC set must look like '2007_trainval', got {spec!r}")
    return year, image_set


def build_evaluator(dataset_name: str, dataset: Any) -> Any:
    """VOC mAP for `voc`, COCOeval on the dataset's own JSON otherwise; both score every image
    of the dataset (an unreadable one counts as missed)."""
    if dataset_name == "voc":
        return VOCEvaluator.from_dataset(dataset)
    return CocoEvaluator.from_dataset(dataset)


def build_train_transforms(aug_cfg: Any, model: RFCN | RFCNSpec) -> Any:
    """The data-side augmentation; sizes default to the model's own resize sizes."""
    spec = model if isinstance(model, RFCNSpec) else model.spec
    min_sizes = [int(s) for s in aug_cfg.min_sizes] if aug_cfg.min_sizes else None
    if min_sizes is None:
        min_sizes = [int(spec.images.min_size)]
    max_size = int(aug_cfg.max_size or spec.images.max_size)
    return _train_transforms(min_sizes, max_size, aug_cfg.flip_prob, aug_cfg.color_jitter)


# ---- the model -----------------------------------------------------------------------------


def _arch_of(model_name: str) -> str:
    if model_name not in MODEL_BUILDERS:
        raise ValueError(f"model.name must be one of {MODEL_BUILDERS}, got {model_name!r}")
    return model_name.removeprefix("rfcn_")


def config_spec(model_cfg: Any, num_classes: int) -> RFCNSpec:
    """The spec a fresh run resolves from its model config (pretrained = weights_backbone
    set, which decides the trunk's default norm and frozen stages)."""
    return RFCNSpec.create(_arch_of(model_cfg.name), num_classes,
                           pretrained=bool(model_cfg.weights_backbone),
                           **rc.model_kwargs(model_cfg))


def checkpoint_spec(ckpt: dict[str, Any], source: str) -> RFCNSpec:
    """The spec a checkpoint stores; a format-1 checkpoint's from the config it stores."""
    if isinstance(ckpt.get("model_spec"), dict):
        try:
            return RFCNSpec.from_dict(ckpt["model_spec"])
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from e
    if "config" not in ckpt or "class_names" not in ckpt:
        raise CheckpointError(
            f"{source} has no model_spec / config / class_names: not an rfcn training "
            "checkpoint")
    return config_spec(rc.from_yaml(ckpt["config"]).model, len(ckpt["class_names"]))


def build_model(model_cfg: Any, num_classes: int, *, load_backbone: bool = True) -> RFCN:
    """A fresh model from its config: the builder resolves and initialises it (ImageNet
    weights into the trunk when `model.weights_backbone` is set and `load_backbone`)."""
    if not load_backbone:
        return rfcn_from_spec(config_spec(model_cfg, num_classes))
    builder = getattr(rfcn.models, model_cfg.name) if model_cfg.name in MODEL_BUILDERS else None
    if builder is None:
        _arch_of(model_cfg.name)  # raises, naming the choices
    return builder(num_classes, weights=None, weights_backbone=model_cfg.weights_backbone,
                   **rc.model_kwargs(model_cfg))


def restore_model(ckpt: dict[str, Any], source: str) -> RFCN:
    """The model a checkpoint was trained as, with its weights (eval, infer, export)."""
    spec = checkpoint_spec(ckpt, source)
    model = rfcn_from_spec(spec)
    load_model_state(model, ckpt, architecture=spec.builder, source=source)
    return model


def resume_model(model_cfg: Any, num_classes: int, ckpt: dict[str, Any], source: str) -> RFCN:
    """The checkpoint's model, exactly, to continue its run. A config that now asks for
    another model is warned about (the run continues as it started)."""
    wanted = config_spec(model_cfg, num_classes)
    spec = checkpoint_spec(ckpt, source)
    if spec.builder != wanted.builder:
        spec = wanted  # the loader then names the architectures and the differing tensors
    diffs = spec.differences(wanted)
    if diffs:
        logger.warning("train.resume: the run continues with the model it started with; the "
                       "config now differs in %s", "; ".join(diffs))
    model = rfcn_from_spec(spec.replace(num_classes=num_classes))
    load_model_state(model, ckpt, architecture=model_cfg.name, source=source)
    return model


def finetune_model(model_cfg: Any, num_classes: int, ckpt: dict[str, Any], source: str) -> RFCN:
    """The checkpoint's architecture (frozen stages included) with `num_classes` and the
    config's settings; class-specific layers re-initialised when the class count differs."""
    wanted = config_spec(model_cfg, num_classes)
    spec = checkpoint_spec(ckpt, source)
    if spec.builder == wanted.builder:
        diffs = wanted.differences(spec, names=ARCHITECTURE)
        if diffs:
            logger.info("%s: the architecture comes from the checkpoint (config vs "
                        "checkpoint: %s)", source, "; ".join(diffs))
        spec = wanted.replace(**spec.architecture())
    else:
        spec = wanted  # the loader then names the architectures and the differing tensors
    model = rfcn_from_spec(spec)
    load_model_state(model, ckpt, allow_class_change=True, architecture=model_cfg.name,
                     source=source)
    logger.info("fine-tuning from %s", source)
    return model


# ---- solver, trainer -----------------------------------------------------------------------


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
                                solver_cfg.weight_decay, name=rc.plain(solver_cfg.optimizer))
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


def train_loader_factory(cfg: Any, dataset: Any, transforms: Any, rank: int,
                         world_size: int) -> Callable[[int], Any]:
    """`start_iter -> the training loader from that iteration`."""

    def make(start_iter: int) -> Any:
        return build_train_loader(
            dataset, cfg.solver.ims_per_batch, seed=cfg.train.seed, start_iter=start_iter,
            num_workers=cfg.train.num_workers, strict=cfg.dataset.strict, rank=rank,
            world_size=world_size, transforms=transforms,
        )

    return make


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
