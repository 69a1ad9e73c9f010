"""Structured-config schemas (registered in Hydra's ConfigStore) and the builders that turn a
composed config into objects by calling plain constructors.

This is the only library module that knows Hydra / OmegaConf. Every schema is a dataclass, so
a misspelt key (`train.max_itr=3`) or a wrongly typed value fails at composition, naming the
key. Constructors elsewhere in rfcn receive numbers and built objects, never a config.

Config groups: `model/` (rfcn_r18, rfcn_r50, rfcn_r101), `dataset/` (synthetic, coco, voc,
coco_json), `solver/` (default, voc_paper, coco_paper), `experiment/` (paper settings).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

logger = logging.getLogger(__name__)

# ---- schemas ---------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    max_iter: int = 1000
    eval_period: int = 0  # 0: evaluate only at the end
    checkpoint_period: int = 500
    resume: bool = False  # continue from <output_dir>/checkpoints/last.pt
    device: str = "auto"  # cpu | cuda | auto
    seed: int = 0
    amp: str = "none"  # none | fp16 | bf16 (CUDA only)
    clip_grad_norm: float | None = None
    max_nonfinite_steps: int = 5  # consecutive non-finite losses before stopping
    max_loss: float = 1.0e4  # a total loss above this counts as exploded (like NaN)
    num_workers: int = 2  # data-loading processes per training process
    num_threads: int | None = None  # torch intra-op threads; None: cores / processes
    log_period: int = 20
    num_vis_images: int = 4  # val images drawn with predictions into TensorBoard
    progress: bool = True  # tqdm progress bar


@dataclass
class SolverConfig:
    optimizer: str = "sgd"  # sgd | adamw (momentum is AdamW's beta1)
    base_lr: float = 0.02
    ims_per_batch: int = 2  # images per process and iteration
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    schedule: str = "step"  # step | cosine
    steps: list[int] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class ModelConfig:
    """`name` is a builder in rfcn.models; every other None field keeps the builder's default."""

    name: str = "rfcn_resnet18"
    weights: str | None = None  # an rfcn checkpoint to fine-tune from
    weights_backbone: str | None = None  # torchvision weights enum name or a local file
    min_size: int | None = None
    max_size: int | None = None
    size_divisible: int | None = None
    anchor_sizes: list[int] | None = None
    aspect_ratios: list[float] | None = None
    rpn_dim: int | None = None
    rpn_pre_nms_top_n_train: int | None = None
    rpn_pre_nms_top_n_test: int | None = None
    rpn_post_nms_top_n_train: int | None = None
    rpn_post_nms_top_n_test: int | None = None
    rpn_nms_thresh: float | None = None
    rpn_fg_iou_thresh: float | None = None
    rpn_bg_iou_thresh: float | None = None
    rpn_batch_size_per_image: int | None = None
    rpn_positive_fraction: float | None = None
    rpn_score_thresh: float | None = None
    k: int | None = None
    head_dim: int | None = None
    class_agnostic_bbox: bool | None = None
    ps_op: str | None = None
    box_fg_iou_thresh: float | None = None
    box_bg_iou_thresh: float | None = None
    box_batch_size_per_image: int | None = None
    box_positive_fraction: float | None = None
    bbox_reg_weights: list[float] | None = None
    ohem: bool | None = None
    ohem_nms_thresh: float | None = None
    box_score_thresh: float | None = None
    box_nms_thresh: float | None = None
    box_detections_per_img: int | None = None
    norm: str | None = None
    trainable_layers: int | None = None


@dataclass
class AugConfig:
    """Training augmentation. Sizes default to the model's min_size / max_size."""

    min_sizes: list[int] | None = None
    max_size: int | None = None
    flip_prob: float = 0.5
    color_jitter: float = 0.0


@dataclass
class DatasetConfig:
    name: str = MISSING
    strict: bool = False  # raise on an unreadable image instead of skipping it


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    name: str = "synthetic"
    root: str = "${oc.env:RFCN_CACHE_DIR,'~/.cache/rfcn'}/synthetic"
    num_train: int = 2000
    num_val: int = 200
    image_size: int = 256
    seed: int = 0


@dataclass
class CocoDatasetConfig(DatasetConfig):
    name: str = "coco"
    root: str = MISSING  # holds annotations/instances_{split}.json and {split}/
    train_split: str = "train2017"
    val_split: str = "val2017"


@dataclass
class SplitConfig:
    img_dir: str = MISSING
    ann_file: str = MISSING


@dataclass
class CocoJsonDatasetConfig(DatasetConfig):
    name: str = "coco_json"
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class VOCDatasetConfig(DatasetConfig):
    name: str = "voc"
    root: str = MISSING  # .../VOCdevkit
    train_sets: list[str] = field(default_factory=lambda: ["2007_trainval", "2012_trainval"])
    test_set: str = "2007_test"


@dataclass
class TrainAppConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = MISSING
    aug: AugConfig = field(default_factory=AugConfig)
    output_dir: str | None = None  # None: Hydra's run dir (tools) or the working directory


@dataclass
class EvalAppConfig:
    checkpoint: str = MISSING
    dataset: Any = None  # None: the dataset recorded in the checkpoint
    device: str = "auto"
    num_workers: int = 2
    output_dir: str | None = None


@dataclass
class InferAppConfig:
    checkpoint: str = MISSING
    input: str = MISSING  # an image or a folder of images
    output: str = MISSING  # folder for drawn images and detections.json
    device: str = "auto"
    score_thresh: float = 0.5


def register_configs() -> None:
    """Register the schemas; config files name them in their defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    cs.store(name="eval_schema", node=EvalAppConfig)
    cs.store(name="infer_schema", node=InferAppConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="solver", name="solver_schema", node=SolverConfig)
    cs.store(group="dataset", name="synthetic_schema", node=SyntheticDatasetConfig)
    cs.store(group="dataset", name="coco_schema", node=CocoDatasetConfig)
    cs.store(group="dataset", name="coco_json_schema", node=CocoJsonDatasetConfig)
    cs.store(group="dataset", name="voc_schema", node=VOCDatasetConfig)


register_configs()

DATASET_SCHEMAS: dict[str, type[DatasetConfig]] = {
    "synthetic": SyntheticDatasetConfig,
    "coco": CocoDatasetConfig,
    "coco_json": CocoJsonDatasetConfig,
    "voc": VOCDatasetConfig,
}

# ---- conversions ------------------------------------------------------------------------------


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (stored in checkpoints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml(text: str) -> DictConfig:
    return OmegaConf.create(text)


def validate_dataset_config(dataset_cfg: DictConfig | dict[str, Any]) -> DictConfig:
    """A dataset node checked against its schema (by `name`); unknown keys raise."""
    node = OmegaConf.create(dataset_cfg) if isinstance(dataset_cfg, dict) else dataset_cfg
    name = node.get("name")
    if name not in DATASET_SCHEMAS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_SCHEMAS)}")
    return OmegaConf.merge(OmegaConf.structured(DATASET_SCHEMAS[name]), node)


def resolve_output_dir(cfg: DictConfig) -> Path:
    """`cfg.output_dir`, else Hydra's run dir when running under Hydra, else the cwd."""
    if cfg.get("output_dir"):
        return Path(os.path.expanduser(str(cfg.output_dir)))
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under @hydra.main
        return Path.cwd()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"train.device must be cpu, cuda or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


# ---- builders ---------------------------------------------------------------------------------

MODEL_BUILDERS = ("rfcn_resnet18", "rfcn_resnet50", "rfcn_resnet101")


def model_kwargs(model_cfg: DictConfig) -> dict[str, Any]:
    """Builder keyword arguments: every set field except name / weights."""
    plain = OmegaConf.to_container(model_cfg, resolve=True)
    assert isinstance(plain, dict)
    skip = {"name", "weights", "weights_backbone"}
    return {k: v for k, v in plain.items() if k not in skip and v is not None}


def build_model(
    model_cfg: DictConfig, num_classes: int, *, load_backbone: bool = True
) -> nn.Module:
    """The detector with fresh weights (an rfcn checkpoint is loaded by the engine, which
    checks it first). `load_backbone=False` skips the ImageNet trunk weights (used when a
    checkpoint provides every weight)."""
    import rfcn.models

    if model_cfg.name not in MODEL_BUILDERS:
        raise ValueError(f"model.name must be one of {MODEL_BUILDERS}, got {model_cfg.name!r}")
    builder = getattr(rfcn.models, model_cfg.name)
    kwargs = model_kwargs(model_cfg)
    weights_backbone = model_cfg.weights_backbone if load_backbone else None
    if not load_backbone and model_cfg.weights_backbone and kwargs.get("norm") is None:
        kwargs["norm"] = "frozen_bn"  # the norm a pretrained trunk was built with
    return builder(num_classes, weights=None, weights_backbone=weights_backbone, **kwargs)


def build_datasets(dataset_cfg: DictConfig) -> tuple[Any, Any]:
    """(train dataset, evaluation dataset) for `dataset_cfg.name`."""
    from rfcn.data import CocoDetection

    name = dataset_cfg.name
    if name == "synthetic":
        from rfcn.data.synthetic import ensure_synthetic_dataset

        splits = ensure_synthetic_dataset(
            os.path.expanduser(dataset_cfg.root),
            num_train=dataset_cfg.num_train,
            num_val=dataset_cfg.num_val,
            image_size=dataset_cfg.image_size,
            seed=dataset_cfg.seed,
        )
        return CocoDetection(*splits["train"]), CocoDetection(*splits["val"])
    if name == "coco":
        root = Path(os.path.expanduser(dataset_cfg.root))
        make = lambda split: CocoDetection(  # noqa: E731
            str(root / split), str(root / "annotations" / f"instances_{split}.json")
        )
        return make(dataset_cfg.train_split), make(dataset_cfg.val_split)
    if name == "coco_json":
        tr, va = dataset_cfg.train, dataset_cfg.val
        return (
            CocoDetection(os.path.expanduser(tr.img_dir), os.path.expanduser(tr.ann_file)),
            CocoDetection(os.path.expanduser(va.img_dir), os.path.expanduser(va.ann_file)),
        )
    if name == "voc":
        from rfcn.data import ConcatDetection, VOCDetection

        root = os.path.expanduser(dataset_cfg.root)
        train_parts = [VOCDetection(root, *_voc_set(s)) for s in dataset_cfg.train_sets]
        train = train_parts[0] if len(train_parts) == 1 else ConcatDetection(train_parts)
        test = VOCDetection(root, *_voc_set(dataset_cfg.test_set))
        return train, test
    raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_SCHEMAS)}")


def build_eval_dataset(dataset_cfg: DictConfig) -> Any:
    """Only the evaluation split (the training split is not opened for VOC/COCO/coco_json)."""
    from rfcn.data import CocoDetection

    name = dataset_cfg.name
    if name == "coco":
        root = Path(os.path.expanduser(dataset_cfg.root))
        split = dataset_cfg.val_split
        return CocoDetection(
            str(root / split), str(root / "annotations" / f"instances_{split}.json")
        )
    if name == "coco_json":
        va = dataset_cfg.val
        return CocoDetection(os.path.expanduser(va.img_dir), os.path.expanduser(va.ann_file))
    if name == "voc":
        from rfcn.data import VOCDetection

        return VOCDetection(os.path.expanduser(dataset_cfg.root), *_voc_set(dataset_cfg.test_set))
    return build_datasets(dataset_cfg)[1]


def _voc_set(spec: str) -> tuple[str, str]:
    """ "2007_trainval" → ("2007", "trainval")."""
    year, _, image_set = str(spec).partition("_")
    if not year or not image_set:
        raise ValueError(f"VOC set must look like '2007_trainval', got {spec!r}")
    return year, image_set


def build_evaluator(dataset_name: str, dataset: Any) -> Any:
    """VOC mAP for `voc`, COCOeval on the dataset's own JSON otherwise."""
    from rfcn.engine.coco_eval import CocoEvaluator
    from rfcn.engine.voc_eval import VOCEvaluator

    if dataset_name == "voc":
        return VOCEvaluator.from_dataset(dataset)
    return CocoEvaluator.from_dataset(dataset)


def build_train_transforms(aug_cfg: DictConfig, model_cfg: DictConfig, model: nn.Module) -> Any:
    """The data-side augmentation; sizes default to the model's own resize sizes."""
    from rfcn.data.transforms import build_train_transforms as build

    min_sizes = list(aug_cfg.min_sizes) if aug_cfg.min_sizes else None
    if min_sizes is None:
        min_sizes = [int(s) for s in model.transform.min_size]
    max_size = int(aug_cfg.max_size or model.transform.max_size)
    return build(min_sizes, max_size, aug_cfg.flip_prob, aug_cfg.color_jitter)


def build_solver(
    solver_cfg: DictConfig, model: nn.Module, max_iter: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    from rfcn.engine.solver import build_lr_scheduler, build_optimizer

    optimizer = build_optimizer(
        model,
        solver_cfg.base_lr,
        solver_cfg.momentum,
        solver_cfg.weight_decay,
        name=solver_cfg.optimizer,
    )
    scheduler = build_lr_scheduler(
        optimizer,
        max_iter=max_iter,
        schedule=solver_cfg.schedule,
        steps=list(solver_cfg.steps),
        gamma=solver_cfg.gamma,
        warmup_iters=solver_cfg.warmup_iters,
        warmup_factor=solver_cfg.warmup_factor,
    )
    return optimizer, scheduler
