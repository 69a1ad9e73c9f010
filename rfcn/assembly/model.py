"""The model of a run: its spec from the config or a checkpoint, built fresh, resumed,
fine-tuned or restored, and wrapped for test-time augmentation."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from torch import nn

import rfcn.models
from rfcn import config as rc
from rfcn.checkpoint import CheckpointError, load_model_state, rebuild_model
from rfcn.engine.ema import training_weights
from rfcn.models import RFCN
from rfcn.models.builders import rfcn_from_spec
from rfcn.models.spec import ARCHITECTURE, PostSpec, RFCNSpec
from rfcn.models.tta import TestTimeAugmentation

logger = logging.getLogger(__name__)

MODEL_BUILDERS = ("rfcn_resnet18", "rfcn_resnet50", "rfcn_resnet101")
# keys rfcn.assembly.sizing may resolve from the training set ("auto")
AUTO_KEYS = ("min_size", "max_size", "train_min_sizes", "anchor_sizes", "aspect_ratios")
_POST_KEYS = tuple(f.name for f in fields(PostSpec))


def _arch_of(model_name: str) -> str:
    if model_name not in MODEL_BUILDERS:
        raise ValueError(f"model.name must be one of {MODEL_BUILDERS}, got {model_name!r}")
    return model_name.removeprefix("rfcn_")


def model_options(model_cfg: Any) -> dict[str, Any]:
    """The builder keyword arguments of a model node; an `auto` left unresolved raises."""
    kwargs = rc.model_kwargs(model_cfg)
    left = [k for k in AUTO_KEYS if kwargs.get(k) == "auto"]
    if left:
        raise ValueError(
            f"model.{left[0]}=auto is chosen from the training set (rfcn.assembly."
            f"apply_auto_sizing, which tools/train.py runs); give a value to build the model "
            f"without data (unresolved: {', '.join('model.' + k for k in left)})")
    return kwargs


def config_spec(model_cfg: Any, num_classes: int) -> RFCNSpec:
    """The spec a fresh run resolves from its model config (pretrained = weights_backbone
    set, which decides the trunk's default norm and frozen stages)."""
    return RFCNSpec.create(_arch_of(model_cfg.name), num_classes,
                           pretrained=bool(model_cfg.weights_backbone),
                           **model_options(model_cfg))


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
                   **model_options(model_cfg))


def _post_overrides(test: Any) -> dict[str, Any]:
    """The post-processing fields a `test` node (or dict) sets; None keeps the checkpoint's."""
    if test is None:
        return {}
    values = test if isinstance(test, dict) else rc.plain(test)
    return {k: values[k] for k in _POST_KEYS if values.get(k) is not None}


def restore_model(ckpt: dict[str, Any], source: str, test: Any = None) -> RFCN:
    """The model a checkpoint was trained as, with its weights (eval, infer, export);
    `test` (a TestConfig node or a dict) may change its post-processing (NMS or soft-NMS,
    thresholds, detections per image)."""
    spec = checkpoint_spec(ckpt, source)
    overrides = _post_overrides(test)
    if overrides:
        diffs = spec.replace(**overrides).differences(spec, names=_POST_KEYS)
        if diffs:
            logger.info("test-time post-processing (test vs checkpoint): %s", "; ".join(diffs))
    return rebuild_model(ckpt, source, spec, **overrides)


def test_time_model(model: RFCN, test: Any) -> nn.Module:
    """`model`, or a TestTimeAugmentation of it when `test.scales` / `test.flip` ask for
    several passes (their candidates merged before the final NMS)."""
    scales = [int(s) for s in (test.scales or [])] if test is not None else []
    flip = bool(test.flip) if test is not None else False
    if not scales and not flip:
        return model
    logger.info("test-time augmentation: scales %s, flip %s", scales or
                [model.spec.images.min_size], flip)
    return TestTimeAugmentation(model, scales, flip)


test_time_model.__test__ = False  # type: ignore[attr-defined]  (not a pytest test)


def resume_model(model_cfg: Any, num_classes: int, ckpt: dict[str, Any], source: str) -> RFCN:
    """The checkpoint's model, exactly, to continue its run: its raw training weights (not
    the moving average of an EMA run, rfcn.engine.ema). A config that now asks for another
    model is warned about (the run continues as it started)."""
    wanted = config_spec(model_cfg, num_classes)
    spec = checkpoint_spec(ckpt, source)
    if spec.builder != wanted.builder:
        spec = wanted  # the loader then names the architectures and the differing tensors
    diffs = spec.differences(wanted)
    if diffs:
        logger.warning("train.resume: the run continues with the model it started with; the "
                       "config now differs in %s", "; ".join(diffs))
    ckpt_classes = len(ckpt.get("class_names") or []) or num_classes
    if ckpt_classes != num_classes:
        raise CheckpointError(
            f"{source}: train.resume continues a run trained on {ckpt_classes} classes "
            f"(background included), but the dataset given now has {num_classes}. To train on "
            f"this data, start a new run (another hydra.run.dir) with model.weights={source}")
    model = rfcn_from_spec(spec.replace(num_classes=num_classes))
    load_model_state(model, training_weights(ckpt), architecture=model_cfg.name, source=source)
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
