"""Datasets, evaluators, training transforms and the training loader from their config nodes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfcn import config as rc
from rfcn.config import ConfigError
from rfcn.data import CocoDetection, ConcatDetection, VOCDetection
from rfcn.data.loader import build_train_loader
from rfcn.data.mixing import SampleMixer
from rfcn.data.synthetic import ensure_synthetic_dataset
from rfcn.data.transforms import build_train_transforms as _train_transforms
from rfcn.evaluation.coco import CocoEvaluator
from rfcn.evaluation.voc import VOCEvaluator
from rfcn.models import RFCN
from rfcn.models.spec import RFCNSpec

logger = logging.getLogger(__name__)


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
        parts = [_voc_split(dataset_cfg, s) for s in dataset_cfg.train_sets]
        train = parts[0] if len(parts) == 1 else ConcatDetection(parts)
        return train, build_eval_dataset(dataset_cfg)
    if name == "coco":
        return _coco_split(dataset_cfg, dataset_cfg.train_split), build_eval_dataset(dataset_cfg)
    if name == "coco_json":
        return _coco_json_split(dataset_cfg, "train"), build_eval_dataset(dataset_cfg)
    raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(rc.DATASET_SCHEMAS)}")


def build_eval_dataset(dataset_cfg: Any) -> Any:
    """Only the evaluation split (the training split is not opened for VOC/COCO/coco_json)."""
    name = dataset_cfg.name
    if name == "coco":
        return _coco_split(dataset_cfg, dataset_cfg.val_split)
    if name == "coco_json":
        return _coco_json_split(dataset_cfg, "val")
    if name == "voc":
        return _voc_split(dataset_cfg, dataset_cfg.test_set)
    return build_datasets(dataset_cfg)[1]


def _coco_json_split(dataset_cfg: Any, split: str) -> CocoDetection:
    node = dataset_cfg[split]
    ann_file = _existing(f"dataset.{split}.ann_file", node.ann_file, file=True)
    img_dir = _existing(f"dataset.{split}.img_dir", node.img_dir, file=False)
    dataset = CocoDetection(str(img_dir), str(ann_file))
    check_image_folder(dataset, f"dataset.{split}.img_dir", str(ann_file))
    return dataset


def _coco_split(dataset_cfg: Any, split: str) -> CocoDetection:
    root = _existing("dataset.root", dataset_cfg.root, file=False)
    ann_file = root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        raise ConfigError("dataset.root", f"{root} has no annotations/instances_{split}.json "
                          "(expected COCO's layout: annotations/, train2017/, val2017/)")
    dataset = CocoDetection(str(root / split), str(ann_file))
    check_image_folder(dataset, "dataset.root", str(ann_file))
    return dataset


def _existing(key: str, value: Any, *, file: bool) -> Path:
    """`value` as a path that exists (a file or a folder), else ConfigError naming `key`."""
    path = Path(os.path.expanduser(str(value)))
    if file and not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise ConfigError(key, f"{path}: {what}")
    if not file and not path.is_dir():
        what = "is a file, not a folder" if path.is_file() else "no such folder"
        raise ConfigError(key, f"{path}: {what}")
    return path


def check_image_folder(dataset: Any, key: str, source: str, sample: int = 2000) -> None:
    """Before iteration 0: the images `source` lists must be in the dataset's folder. None
    found is a ConfigError naming `key`; some missing is a warning with the count (the loader
    then skips them). Up to `sample` evenly spaced images are looked for (a stat each)."""
    n = len(dataset)
    if n == 0:
        raise ConfigError(key, f"{source} lists no usable image")
    step = max(1, n // sample)
    looked = range(0, n, step)
    missing = [i for i in looked if not os.path.isfile(dataset.image_path(i))]
    if len(missing) == len(looked):
        first = dataset.image_path(missing[0])
        raise ConfigError(key, f"none of the images {source} lists is there (looked for "
                          f"{len(looked)}, e.g. {first}): is this the right image folder?")
    if missing:
        logger.warning("%s: %d of %d images looked for are missing from %s (e.g. %s); they "
                       "will be skipped", key, len(missing), len(looked),
                       os.path.dirname(dataset.image_path(missing[0])),
                       dataset.image_path(missing[0]))


def _voc_split(dataset_cfg: Any, spec: str) -> VOCDetection:
    root = _existing("dataset.root", dataset_cfg.root, file=False)
    dataset = VOCDetection(str(root), *_voc_set(spec))
    check_image_folder(dataset, "dataset.root", f"VOC {spec}")
    return dataset


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
    """The data-side augmentation; the resize draws from the model's training sizes (its
    `train_min_sizes`, else `min_size`) under its `max_size`, so the model's own resize then
    leaves the images as they are."""
    spec = model if isinstance(model, RFCNSpec) else model.spec
    return _train_transforms(
        list(spec.images.training_sizes), int(spec.images.max_size),
        flip_prob=float(aug_cfg.flip_prob), color_jitter=float(aug_cfg.color_jitter),
        hue=float(aug_cfg.hue), crop_prob=float(aug_cfg.crop_prob),
        crop_min_scale=float(aug_cfg.crop_min_scale), vflip_prob=float(aug_cfg.vflip_prob),
    )


def sample_mixer(aug_cfg: Any, max_iter: int) -> SampleMixer | None:
    """The mosaic / copy-paste of `aug`, off for its last `mosaic_off_frac` of `max_iter`
    (None when both probabilities are 0)."""
    mosaic_p, paste_p = float(aug_cfg.mosaic_prob), float(aug_cfg.copy_paste_prob)
    if mosaic_p == 0 and paste_p == 0:
        return None
    off = float(aug_cfg.mosaic_off_frac)
    if not 0.0 <= off <= 1.0:
        raise ConfigError("aug.mosaic_off_frac", f"{off} is not a fraction in [0, 1]")
    try:
        mixer = SampleMixer(mosaic_p, paste_p, int(aug_cfg.copy_paste_max),
                            off_after_iter=round((1.0 - off) * max_iter))
    except ValueError as e:  # "aug.<key>: <problem>"
        key, _, problem = str(e).partition(": ")
        raise ConfigError(key, problem) from None
    logger.info("mixing augmentation: %s", mixer)
    return mixer


def train_loader_factory(cfg: Any, dataset: Any, transforms: Any, rank: int,
                         world_size: int, pin_memory: bool = False) -> Callable[[int], Any]:
    """`start_iter -> the training loader from that iteration` (`pin_memory`: page-locked
    batches, for a CUDA device)."""

    mixer = sample_mixer(cfg.aug, int(cfg.train.max_iter))

    def make(start_iter: int) -> Any:
        return build_train_loader(
            dataset, cfg.solver.ims_per_batch, seed=cfg.train.seed, start_iter=start_iter,
            num_workers=cfg.train.num_workers, strict=cfg.dataset.strict, rank=rank,
            world_size=world_size, transforms=transforms, pin_memory=pin_memory, mixer=mixer,
        )

    return make
