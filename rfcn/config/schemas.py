"""The config schemas: one dataclass per config node, one Enum per choice (str-valued, so a
choice compares equal to its name). Registered in Hydra's ConfigStore by rfcn.config."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

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
    deform = "deform"  # Deformable R-FCN: learned bin offsets


class BoxNms(str, Enum):
    nms = "nms"
    soft_linear = "soft_linear"
    soft_gaussian = "soft_gaussian"


class BoxLoss(str, Enum):
    smooth_l1 = "smooth_l1"
    giou = "giou"
    diou = "diou"
    ciou = "ciou"


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
    num_threads: int | None = None  # torch + Numba threads; None: idle cores / processes
    log_period: int = 20
    num_vis_images: int = 4  # val images drawn with predictions into TensorBoard
    progress: bool = True  # tqdm progress bar
    best_metric: str = "AP"  # with eval_period > 0: checkpoints/best.pt by this metric
    early_stop_patience: int = 0  # evaluations without improvement before stopping (0: off)
    curves: bool = True  # curves.png (losses, lr, metrics) in the run folder
    # Moving average of the weights (rfcn.engine.ema), evaluated and saved as the model.
    # Ultralytics uses decay 0.9999 and tau 2000 for runs of 10^5+ updates: a window
    # 1/(1-decay) of ~10^4 updates. The quickstart trains 1600 iterations, so the defaults
    # scale down: a 200-update window (the last ~1/8 of the run, where the cosine schedule
    # has settled), reached after a ramp of a few hundred updates (tau 100: decay 0.63*d
    # at 100, 0.95*d at 300) while the weights still move fast. Paper schedules (20k-140k
    # iterations): ema_decay=0.9999 ema_tau=2000.
    ema: bool = False
    ema_decay: float = 0.995
    ema_tau: float = 100.0  # updates of the decay's warm-up ramp


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
    # lr factor of deformable convolutions' offset convs (model.deform_conv5)
    offset_lr_mult: float = 0.1


@dataclass
class ModelConfig:
    """`name` is a builder in rfcn.models; every other None field keeps the builder's default
    (rfcn.models.spec: a test keeps the two lists of fields the same)."""

    name: str = "rfcn_resnet18"
    weights: str | None = None  # an rfcn checkpoint to fine-tune from
    weights_backbone: str | None = None  # torchvision weights enum name or a local file
    # int, or "auto": chosen from the training set's box sizes within the budget (sizing.*)
    min_size: Any = None
    max_size: Any = None
    # multi-scale training: list of shorter sides, or "auto" (0.8-1.2 x min_size)
    train_min_sizes: Any = None
    size_divisible: int | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    anchor_sizes: Any = None  # list of sizes, or "auto" (fitted to the resized boxes)
    aspect_ratios: Any = None  # list of h/w ratios, or "auto"
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
    deform_trans_std: float | None = None
    deform_sample_per_part: int | None = None
    box_fg_iou_thresh: float | None = None
    box_bg_iou_thresh: float | None = None
    box_batch_size_per_image: int | None = None
    box_positive_fraction: float | None = None
    bbox_reg_weights: list[float] | None = None
    ohem: bool | None = None
    ohem_nms_thresh: float | None = None
    box_loss: BoxLoss | None = None
    box_loss_weight: float | None = None
    box_score_thresh: float | None = None
    box_nms_thresh: float | None = None
    box_detections_per_img: int | None = None
    box_nms: BoxNms | None = None
    soft_nms_sigma: float | None = None
    soft_nms_min_score: float | None = None
    norm: Norm | None = None
    trainable_layers: int | None = None
    deform_conv5: bool | None = None


@dataclass
class AugConfig:
    """Training augmentation (multi-scale training is model.train_min_sizes)."""

    flip_prob: float = 0.5
    vflip_prob: float = 0.0  # for data without an up (microscopy, aerial)
    color_jitter: float = 0.0  # brightness, contrast, saturation factors in [1 - s, 1 + s]
    hue: float = 0.0  # hue shift, fraction of the colour circle
    crop_prob: float = 0.0  # random crop (then resize: zoom-in scale jitter)
    crop_min_scale: float = 0.6  # smallest crop side, fraction of the image's
    mosaic_prob: float = 0.0  # 4 images into one (rfcn.data.mixing)
    copy_paste_prob: float = 0.0  # paste box rectangles of another image, feathered edge
    copy_paste_max: int = 3  # boxes pasted per sample at most
    mosaic_off_frac: float = 0.1  # mosaic and copy-paste off for this last part of the run


@dataclass
class SizingConfig:
    """What `model.min_size=auto` / `anchor_sizes=auto` aim at (rfcn.data.sizing)."""

    target_object_px: float = 20.0  # the small objects' side after resizing
    percentile: float = 5.0  # which box side counts as small
    step_pixels: int = 140_000  # images per step x pixels per image: the compute budget
    min_ims_per_batch: int = 4  # the budget trades images per step for pixels down to this
    min_epochs: float = 3.0  # ... while every training image is still seen this many times
    max_upscale: float = 2.0
    min_short: int = 128
    max_short: int = 800
    # small objects under the budget: train on random crops resized to the training size
    # that show the objects as at up to this x the training size (aug.crop_*; 1: off)
    max_zoom: float = 1.4
    zoom_min_epochs: float = 10.0  # ... only when every image is seen this many times
    zoom_test_factor: float = 1.3  # zoom: test at this x the crops' middle scale


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
    sizing: SizingConfig = field(default_factory=SizingConfig)
    output_dir: str | None = None  # None: Hydra's run dir (tools) or the working directory


@dataclass
class TestConfig:
    """Test-time options of tools/eval.py and tools/infer.py (None: the checkpoint's)."""

    scales: list[int] = field(default_factory=list)  # shorter sides (empty: the model's own)
    flip: bool = False  # also the mirrored image; passes merged before the final NMS
    box_nms: BoxNms | None = None  # nms | soft_linear | soft_gaussian
    soft_nms_sigma: float | None = None
    soft_nms_min_score: float | None = None
    box_nms_thresh: float | None = None
    box_score_thresh: float | None = None
    box_detections_per_img: int | None = None


@dataclass
class EvalAppConfig:
    checkpoint: str = MISSING
    dataset: Any = None  # None: the dataset recorded in the checkpoint
    device: str = "auto"
    num_workers: int = 2
    num_threads: int | None = None  # torch + Numba threads; None: idle cores
    output_dir: str | None = None
    test: TestConfig = field(default_factory=TestConfig)
    analysis: bool = True  # confusion matrix, PR curves, COCO error breakdown (PNG + JSON)
    confusion_iou_thresh: float = 0.5
    confusion_score_thresh: float = 0.3  # detections below it are not in the matrix


class Runtime(str, Enum):
    torch = "torch"  # the checkpoint, in PyTorch
    onnxruntime = "onnxruntime"  # an ONNX file of tools/export.py
    pt2 = "pt2"  # a torch.export file of tools/export.py


class ExportFormat(str, Enum):
    onnx = "onnx"
    pt2 = "pt2"


@dataclass
class ExportAppConfig:
    """tools/export.py: the whole detector (resize .. post-processing) as one file."""

    checkpoint: str = MISSING
    format: ExportFormat = ExportFormat.onnx
    output: str = MISSING  # the file to write (model.onnx / model.pt2)
    opset: int = 18
    example_size: list[int] = field(default_factory=lambda: [480, 640])  # (h, w), any runs
    num_threads: int | None = None  # torch + Numba threads; None: idle cores
    test: TestConfig = field(default_factory=TestConfig)  # post-processing overrides


@dataclass
class InferAppConfig:
    checkpoint: str | None = None  # runtime=torch
    runtime: Runtime = Runtime.torch
    model: str | None = None  # the exported file for runtime=onnxruntime / pt2
    input: str = MISSING  # an image or a folder of images
    output: str = MISSING  # folder for drawn images and detections.json
    device: str = "auto"
    num_threads: int | None = None  # torch + Numba threads; None: idle cores
    score_thresh: float = 0.5
    test: TestConfig = field(default_factory=TestConfig)


class Split(str, Enum):
    train = "train"
    val = "val"


@dataclass
class BrowseAppConfig:
    """tools/browse.py: draw a split's ground truth and report its statistics."""

    model: ModelConfig = field(default_factory=ModelConfig)  # sizes of the training transforms
    dataset: DatasetConfig = MISSING
    aug: AugConfig = field(default_factory=AugConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)
    split: Split = Split.train
    output: str = MISSING  # folder for the drawn images, statistics and histograms
    n: int = 16  # images drawn (seeded sample); 0: none, statistics only
    transforms: bool = False  # draw after the training transforms (resize, flip, jitter)
    seed: int = 0
    num_threads: int | None = None  # torch + Numba threads; None: idle cores
    check_images: bool = True  # decode every image of the split once, name the bad ones


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


DATASET_SCHEMAS: dict[str, type[DatasetConfig]] = {
    "synthetic": SyntheticDatasetConfig,
    "coco": CocoDatasetConfig,
    "coco_json": CocoJsonDatasetConfig,
    "voc": VOCDatasetConfig,
}


def validate_dataset_config(dataset_cfg: DictConfig | dict[str, Any]) -> DictConfig:
    """A dataset node checked against its schema (by `name`); unknown keys raise."""
    node = OmegaConf.create(dataset_cfg) if isinstance(dataset_cfg, dict) else dataset_cfg
    name = node.get("name")
    if name not in DATASET_SCHEMAS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_SCHEMAS)}")
    return OmegaConf.merge(OmegaConf.structured(DATASET_SCHEMAS[name]), node)
