"""`model.min_size / max_size / train_min_sizes / anchor_sizes / aspect_ratios = auto`:
resolved from the training set's boxes (rfcn.data.sizing) before the model is built.

`apply_auto_sizing(cfg, train_dataset)` writes the chosen values into the config (so the
checkpoint's config and spec carry them and eval / infer / export use them), logs them, and
returns them. Explicit values always win; the images per step (`solver.ims_per_batch`) are
only lowered when the input size itself is automatic, the small objects need the pixels and
the run (`train.max_iter` x processes) still sees every image `sizing.min_epochs` times.
Zoom (small objects the budget cannot give enough pixels, rfcn.data.sizing): the training
crops show the objects as at up to `sizing.max_zoom` times the training size (the anchors are
fitted at that scale), the test size `min_size` is `sizing.zoom_test_factor` times that,
`train_min_sizes` stay around the training size and `aug.crop_prob=1` / `aug.crop_min_scale`
are set; only when `min_size` and `train_min_sizes` are both `auto` and `aug.crop_prob` is
left at 0.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from rfcn.assembly.model import AUTO_KEYS
from rfcn.data.sizing import SizingBudget, anchor_coverage, choose_anchors, choose_size
from rfcn.data.statistics import dataset_statistics
from rfcn.models.spec import ImageSpec, RPNSpec
from rfcn.utils.distributed import get_world_size

logger = logging.getLogger(__name__)

# multi-scale training around the chosen size (the R-FCN paper trains COCO at 480..800)
TRAIN_SCALE_FACTORS = (0.8, 0.9, 1.0, 1.1, 1.2)
ZOOM_MAX_SIZE_ROOM = 1.2


def _int_value(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
            or value < 1:
        raise ValueError(f"model.{key} must be a positive integer or 'auto', got {value!r}")
    return int(value)


def _numbers(key: str, value: Any, integer: bool) -> list[Any]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"model.{key} must be a list of numbers or 'auto', got {value!r}")
    out = list(value)
    if not out or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0
                      for v in out):
        raise ValueError(f"model.{key} must be a non-empty list of positive numbers or "
                         f"'auto', got {out!r}")
    return [_int_value(key, v) for v in out] if integer else [float(v) for v in out]


def _check_explicit(model_cfg: Any) -> set[str]:
    """The `auto` keys; every other set value checked for its type (naming the key)."""
    auto = set()
    for key in AUTO_KEYS:
        value = model_cfg.get(key)
        if value is None:
            continue
        if value == "auto":
            auto.add(key)
        elif key in ("min_size", "max_size"):
            _int_value(key, value)
        else:
            _numbers(key, value, integer=key != "aspect_ratios")
    return auto


def _round8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def _budget(sizing_cfg: Any) -> SizingBudget:
    if sizing_cfg is None:
        return SizingBudget()
    return SizingBudget(**{k: type(getattr(SizingBudget(), k))(sizing_cfg[k])
                           for k in SizingBudget.__dataclass_fields__ if k in sizing_cfg})


def _zoom(cfg: Any, choice: Any, auto: set[str]) -> dict[str, Any]:
    """The zoom's crop keys written into cfg.aug ({} when there is no zoom or it is off)."""
    if not choice.train_size:
        return {}
    aug = cfg.get("aug")
    blocked = ("model.train_min_sizes is set" if "train_min_sizes" not in auto else
               "aug.crop_prob is set" if aug is None or float(aug.crop_prob) != 0.0 else "")
    if blocked:
        logger.info("auto sizing: the small objects want x%.2f the training size, not zoomed "
                    "(%s)", choice.zoom, blocked)
        return {}
    aug.crop_prob, aug.crop_min_scale = 1.0, float(choice.crop_min_scale)
    logger.info("auto sizing: zoom for the small objects: train on random crops "
                "(aug.crop_prob=1, aug.crop_min_scale=%g) resized around %d px, which show "
                "objects as at %d px; test at %d px (x%g that, sizing.zoom_test_factor; "
                "sizing.max_zoom=1 switches the zoom off)", choice.crop_min_scale,
                choice.train_size, choice.anchor_size, choice.min_size,
                round(choice.min_size / choice.anchor_size, 2))
    return {"train_size": choice.train_size, "anchor_size": choice.anchor_size,
            "aug.crop_prob": 1.0, "aug.crop_min_scale": float(choice.crop_min_scale)}


def _auto_input_size(cfg: Any, stats: Any, kept: np.ndarray, budget: SizingBudget,
                     auto: set[str]) -> dict[str, Any]:
    """`min_size` (and `ims_per_batch` when the budget lowers it, written into cfg.solver;
    the zoom's training size and crop keys, see `_zoom`)."""
    solver, train = cfg.get("solver"), cfg.get("train")
    configured_ims = int(solver.ims_per_batch) if solver is not None else 2
    steps = int(train.max_iter) * get_world_size() if train is not None else None
    choice = choose_size(stats.image_sizes, stats.sqrt_areas[kept], configured_ims, budget,
                         train_steps=steps)
    zoom = _zoom(cfg, choice, auto)
    if choice.train_size and not zoom:  # no zoom: test at the training size
        choice = dataclasses.replace(choice, min_size=choice.train_size, train_size=0,
                                     crop_min_scale=None, anchor_size=0,
                                     scale=choice.scale / choice.zoom,
                                     small_object_px=choice.small_object_px / choice.zoom)
    logger.info("auto sizing: shorter side %d px (x%.2f of the median image; the %g-th "
                "percentile box side %.1f px -> %.1f px, target %g; %d images x pixels "
                "within sizing.step_pixels=%d)", choice.min_size, choice.scale,
                budget.percentile, choice.notes["small_px"], choice.small_object_px,
                budget.target_object_px, choice.ims_per_batch, budget.step_pixels)
    chosen: dict[str, Any] = {"min_size": choice.min_size, **zoom}
    if solver is not None and choice.ims_per_batch != configured_ims:
        solver.ims_per_batch = choice.ims_per_batch
        chosen["ims_per_batch"] = choice.ims_per_batch
        logger.info("auto sizing: solver.ims_per_batch %d -> %d (the pixel budget; %.1f "
                    "epochs of %d images in %s steps)", configured_ims, choice.ims_per_batch,
                    choice.ims_per_batch * (steps or 0) / stats.num_images, stats.num_images,
                    steps)
    return chosen


def _auto_anchors(model_cfg: Any, auto: set[str], wh: np.ndarray) -> dict[str, Any]:
    """`anchor_sizes` / `aspect_ratios` for the resized boxes `wh` float[B, 2]; logs the
    coverage of the anchors the model will use."""
    sizes, ratios = choose_anchors(wh)
    chosen: dict[str, Any] = {}
    if "anchor_sizes" in auto:
        chosen["anchor_sizes"] = list(sizes)
    if "aspect_ratios" in auto:
        chosen["aspect_ratios"] = [round(r, 4) for r in ratios]
    used_sizes = tuple(chosen.get("anchor_sizes") or model_cfg.get("anchor_sizes")
                       or RPNSpec().anchor_sizes)
    used_ratios = tuple(chosen.get("aspect_ratios") or model_cfg.get("aspect_ratios")
                        or RPNSpec().aspect_ratios)
    logger.info("auto sizing: anchors %s, ratios %s cover %.1f%% of the resized training "
                "boxes at IoU 0.5 (the builder's default anchors: %.1f%%)",
                list(used_sizes), list(used_ratios),
                100 * anchor_coverage(wh, used_sizes, used_ratios),
                100 * anchor_coverage(wh, RPNSpec().anchor_sizes, RPNSpec().aspect_ratios))
    return chosen


def apply_auto_sizing(cfg: Any, dataset: Any) -> dict[str, Any]:
    """Resolve the `auto` model keys of `cfg` from `dataset` (its annotations only; no image
    is read), in place. Returns {key: chosen value} (`ims_per_batch` when it was lowered)."""
    model_cfg = cfg.model
    auto = _check_explicit(model_cfg)
    if not auto:
        return {}
    stats = dataset_statistics(dataset)
    kept = stats.kept & (stats.box_wh.min(axis=1) > 0)
    if stats.num_images == 0:
        raise ValueError("model.*=auto needs a training set with images")
    budget = _budget(cfg.get("sizing"))
    chosen = _auto_input_size(cfg, stats, kept, budget, auto) if "min_size" in auto else {}
    min_size = int(chosen.get("min_size", model_cfg.get("min_size") or ImageSpec().min_size))
    train_size = int(chosen.pop("train_size", min_size))
    anchor_size = int(chosen.pop("anchor_size", 0) or min_size)  # the scale the model trains at
    if "train_min_sizes" in auto:
        chosen["train_min_sizes"] = sorted({_round8(train_size * f)
                                            for f in TRAIN_SCALE_FACTORS})
    if "max_size" in auto:
        aspect = float(np.percentile(stats.image_sizes.max(axis=1)
                                     / stats.image_sizes.min(axis=1), 95))
        train_sizes = chosen.get("train_min_sizes") or model_cfg.get("train_min_sizes") or []
        largest = max([min_size, *(int(s) for s in train_sizes)])
        # zoom: the crops are narrower than the image (each side keeps >= crop_min_scale of
        # its own), so wider; 1.2x more room is what the BCCD measurement used (README)
        room = ZOOM_MAX_SIZE_ROOM if "aug.crop_min_scale" in chosen else 1.0
        chosen["max_size"] = _round8(largest * aspect * room)
    max_size = int(chosen.get("max_size", model_cfg.get("max_size") or
                              max(ImageSpec().max_size, min_size)))
    if auto & {"anchor_sizes", "aspect_ratios"}:
        wh = stats.scaled_box_sizes(anchor_size, max_size)[kept]
        chosen.update(_auto_anchors(model_cfg, auto, wh))
    for key, value in chosen.items():
        if key in AUTO_KEYS:
            model_cfg[key] = value
    logger.info("auto sizing chose %s", ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return chosen


def resolve_without_data(model_cfg: Any, image_hw: tuple[int, int]) -> dict[str, Any]:
    """For a model built without a training set (tools/benchmark.py): `auto` sizes become
    the given image's own (h, w), so it runs at that size; `auto` anchors and ratios, and
    multi-scale sizes, the builder's defaults. Returns what it set."""
    auto = _check_explicit(model_cfg)
    h, w = (int(v) for v in image_hw)
    values = {"min_size": min(h, w), "max_size": max(h, w), "train_min_sizes": None,
              "anchor_sizes": None, "aspect_ratios": None}
    chosen = {k: values[k] for k in sorted(auto)}
    for key, value in chosen.items():
        model_cfg[key] = value
    if chosen:
        logger.info("no training set: %s", ", ".join(
            f"model.{k}={v if v is not None else 'builder default'}" for k, v in chosen.items()))
    return chosen
