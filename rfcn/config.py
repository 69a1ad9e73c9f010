"""Structured-config schemas (registered in Hydra's ConfigStore) and the conversions of a
composed config to plain data. Nothing here builds an object: rfcn.build does that.

This is the only library module that knows Hydra / OmegaConf. Every schema is a dataclass and
every choice an Enum, so a misspelt key (`train.max_itr=3`), a wrongly typed value or an
unknown choice (`solver.optimizer=adam`) fails at composition, naming the key and the choices.
Constructors elsewhere in rfcn receive numbers and built objects, never a config.

Config groups: `model/` (rfcn_r18, rfcn_r50, rfcn_r101), `dataset/` (synthetic, coco, voc,
coco_json), `solver/` (default, voc_paper, coco_paper), `experiment/` (paper settings).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

logger = logging.getLogger(__name__)

# ---- choices (str-valued: they compare equal to their names) ---------------------------------


class Optimizer(str, Enum):
    sgd = "sgd"
    adamw = "adamw"  # momentum is AdamW's beta1


class Schedule(str, Enum):
    step = "step"
    cosine = "cosine"


class Amp(str, Enum):
    none = "none"
    fp16 = "fp16"
    bf16 = "bf16"  # CUDA only


class Norm(str, Enum):
    frozen_bn = "frozen_bn"
    bn = "bn"
    gn = "gn"


class PsOp(str, Enum):
    pool = "pool"
    align = "align"


# ---- schemas ---------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    max_iter: int = 1000
    eval_period: int = 0  # 0: evaluate only at the end
    checkpoint_period: int = 500
    resume: bool = False  # continue from <output_dir>/checkpoints/last.pt
    device: str = "auto"  # cpu | cuda | auto
    seed: int = 0
    amp: Amp = Amp.none
    clip_grad_norm: float | None = None
    max_nonfinite_steps: int = 5  # consecutive non-finite losses before stopping
    max_loss: float = 1.0e4  # a total loss above this counts as exploded (like NaN)
    num_workers: int = 2  # data-loading processes per training process
    num_threads: int | None = None  # torch intra-op threads; None: cores / processes
    log_period: int = 20
    num_vis_images: int = 4  # val images drawn with predictions into TensorBoard
    progress: bool = True  # tqdm progress bar
    best_metric: str = "AP"  # with eval_period > 0: checkpoints/best.pt by this metric
    early_stop_patience: int = 0  # evaluations without improvement before stopping (0: off)
    curves: bool = True  # curves.png (losses, lr, metrics) in the run folder


@dataclass
class SolverConfig:
    optimizer: Optimizer = Optimizer.sgd
    base_lr: float = 0.02
    ims_per_batch: int = 2  # images per process and iteration
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    schedule: Schedule = Schedule.step
    steps: list[int] = field(default_factory=list)
    gamma: float = 0.1
    # The total batch base_lr was tuned for: lr scales linearly with ims_per_batch x processes
    # (None: base_lr as given)
    reference_batch: int | None = None


@dataclass
class ModelConfig:
    """`name` is a builder in rfcn.models; every other None field keeps the builder's default
    (rfcn.models.spec: a test keeps the two lists of fields the same)."""

    name: str = "rfcn_resnet18"
    weights: str | None = None  # an rfcn checkpoint to fine-tune from
    weights_backbone: str | None = None  # torchvision weights enum name or a local file
    min_size: int | None = None
    max_size: int | None = None
    size_divisible: int | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
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
    ps_op: PsOp | None = None
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
    norm: Norm | None = None
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
    analysis: bool = True  # confusion matrix, PR curves, COCO error breakdown (PNG + JSON)
    confusion_iou_thresh: float = 0.5
    confusion_score_thresh: float = 0.3  # detections below it are not in the matrix


@dataclass
class InferAppConfig:
    checkpoint: str = MISSING
    input: str = MISSING  # an image or a folder of images
    output: str = MISSING  # folder for drawn images and detections.json
    device: str = "auto"
    score_thresh: float = 0.5


class Split(str, Enum):
    train = "train"
    val = "val"


@dataclass
class BrowseAppConfig:
    """tools/browse.py: draw a split's ground truth and report its statistics."""

    model: ModelConfig = field(default_factory=ModelConfig)  # sizes of the training transforms
    dataset: DatasetConfig = MISSING
    aug: AugConfig = field(default_factory=AugConfig)
    split: Split = Split.train
    output: str = MISSING  # folder for the drawn images, statistics and histograms
    n: int = 16  # images drawn (seeded sample); 0: none, statistics only
    transforms: bool = False  # draw after the training transforms (resize, flip, jitter)
    seed: int = 0


@dataclass
class BenchmarkAppConfig:
    """tools/benchmark.py: parameters, FLOPs and inference speed of a model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    checkpoint: str | None = None  # a trained checkpoint instead of the model config
    num_classes: int = 81  # with random weights; background included
    image_size: list[int] = field(default_factory=lambda: [600, 900])  # (h, w) of the input
    device: str = "auto"
    num_threads: int | None = None
    runs: int = 10
    warmup: int = 2
    json: bool = False  # also print the numbers as one JSON line


def _from_scratch(weights_backbone: Any, value: Any) -> Any:
    """`${rfcn.from_scratch:${.weights_backbone},VALUE}`: VALUE for a trunk trained from
    scratch, None (the builder's pretrained default) when it starts from ImageNet weights."""
    return None if weights_backbone else value


OmegaConf.register_new_resolver("rfcn.from_scratch", _from_scratch, replace=True)


def register_configs() -> None:
    """Register the schemas; config files name them in their defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    cs.store(name="eval_schema", node=EvalAppConfig)
    cs.store(name="infer_schema", node=InferAppConfig)
    cs.store(name="browse_schema", node=BrowseAppConfig)
    cs.store(name="benchmark_schema", node=BenchmarkAppConfig)
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


def plain(node: Any) -> Any:
    """A config node as plain containers (choices as their names), for constructors."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    if isinstance(node, Enum):
        return node.value
    return node


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (stored in checkpoints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml(text: str) -> DictConfig:
    return OmegaConf.create(text)


def model_kwargs(model_cfg: Any) -> dict[str, Any]:
    """The model node's builder options: every set field except name / weights /
    weights_backbone, as plain values."""
    values = plain(model_cfg)
    assert isinstance(values, dict)
    skip = {"name", "weights", "weights_backbone"}
    return {k: v for k, v in values.items() if k not in skip and v is not None}


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
