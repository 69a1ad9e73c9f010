"""Data-aware sizing: the input size, the images per step and the RPN anchors chosen from the
training set's box statistics (`rfcn.data.statistics`), as ultralytics' autoanchor does for
YOLO, within a compute budget.

- Input size: R-FCN sees the image at stride 16, so an object needs a couple of feature cells
  to be found and placed; the scale is chosen so that the small objects (the `percentile`-th
  box side) reach `target_object_px` pixels after resizing, then capped: never more pixels
  per step than `step_pixels` (images per step x pixels per image, convolutions cost in
  proportion), never above `max_upscale` times the original, never a shorter side outside
  [`min_short`, `max_short`].
- Images per step: the configured number, traded for pixels (down to `min_ims_per_batch`,
  4 by default: BatchNorm statistics from fewer images per step trained clearly worse on
  generated sets the rule was not tuned on) only while the run still sees every training
  image `min_epochs` times: halving the images per step halves what the run learns from.
  README ("Results") has the measurements behind these defaults.
- Zoom (small objects under the budget): when the budget's size leaves the small objects
  below `target_object_px`, the model is tested at up to `max_zoom` times the training size
  (as far as the small objects need) and trains on random crops (`crop_min_scale`) resized
  to the training size: a step costs the budget's pixels, while the objects are seen around
  their test scale (the crop's side fractions run from m = (train / test)^2 to 1, so the
  training scales' geometric middle is the test scale; detectron2's large-scale jitter +
  fixed-size crop does the same). Only on runs that see every image at least
  `zoom_min_epochs` (10) times: the crops leave part of every image unseen, which a
  few-epoch run cannot afford (BCCD, 22 epochs: AP +0.03; a 2000-image generated set at 3
  epochs: AP -0.04; README). `max_zoom=1` switches it off. The test size itself is
  `zoom_test_factor` times that middle scale (the crops' scales fix the middle; the test
  goes above it, as FixRes (Touvron et al. 2019) found for random-resized-crop training:
  a crop shows objects larger than the full image does, and the detector trained on them
  finds small objects better a little above their middle training scale). On BCCD's
  checkpoint trained with crops around 224 px, testing at 1.3x (288 px) gave AP +0.033 and
  Platelets +0.09; on a 300-image set of scripts/make_alt_dataset.py, zoomed 200 -> 256 px,
  AP +0.031 (README). Anchors are fitted at the middle scale (`SizingChoice.anchor_size`),
  the scale the model trains at.
- Anchors: octave sizes (powers of two) over the 1st..99th percentile of the resized box
  sides, ratios (0.5, 1, 2) widened only for strongly elongated boxes (`choose_anchors`);
  `anchor_coverage` is the share of boxes some anchor of the same centre overlaps with
  IoU >= 0.5, logged for the chosen and the builder's default anchors.

Shape shorthand: N images, B boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SizingBudget", "SizingChoice", "anchor_coverage", "choose_anchors", "choose_size"]

STRIDE = 16


@dataclass(frozen=True)
class SizingBudget:
    """What the automatic choice aims at and may spend."""

    target_object_px: float = 20.0  # small objects' side after resizing
    percentile: float = 5.0  # which box side counts as "small"
    step_pixels: int = 140_000  # images per step x pixels per image, per process
    min_ims_per_batch: int = 4
    min_epochs: float = 3.0  # images per step are not traded below this many epochs
    max_upscale: float = 2.0
    min_short: int = 128
    max_short: int = 800
    max_zoom: float = 1.4  # the crops' middle scale / training size at most (1: no zoom)
    zoom_min_epochs: float = 10.0  # ... only on runs that see every image this many times
    zoom_test_factor: float = 1.3  # zoom: test size / the crops' middle scale (1: test at it)


@dataclass(frozen=True)
class SizingChoice:
    min_size: int
    max_size: int
    ims_per_batch: int
    scale: float  # of the typical image
    small_object_px: float  # the small objects' side after resizing (at the test size)
    notes: dict[str, float] = field(default_factory=dict)
    train_size: int = 0  # the training images' shorter side (0: min_size, no zoom)
    crop_min_scale: float | None = None  # zoom: the training crops' smallest side fraction
    anchor_size: int = 0  # zoom: the shorter side the anchors are fitted at (0: min_size)

    @property
    def zoom(self) -> float:
        return self.min_size / self.train_size if self.train_size else 1.0


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def choose_size(
    image_hw: np.ndarray, box_sides: np.ndarray, max_ims_per_batch: int,
    budget: SizingBudget = SizingBudget(), train_steps: int | None = None,
) -> SizingChoice:
    """Input size and images per step.

    Args:
        image_hw: int[N, 2] image sizes (h, w) of the training set.
        box_sides: float[B] sqrt(area) of the training boxes in original pixels.
        max_ims_per_batch: the configured images per step (the most the choice keeps).
        train_steps: optimiser steps x processes of the run; None: not known (the images
            per step may then be traded down to `min_ims_per_batch`).
    """
    if len(image_hw) == 0:
        raise ValueError("automatic sizing needs a training set with images")
    short = float(np.median(np.min(image_hw, axis=1)))
    long = float(np.median(np.max(image_hw, axis=1)))
    aspect = float(np.percentile(np.max(image_hw, axis=1) / np.min(image_hw, axis=1), 95))
    small = float(np.percentile(box_sides, budget.percentile)) if len(box_sides) else short / 8
    want = budget.target_object_px / max(small, 1e-6)
    floor = budget.min_ims_per_batch
    if train_steps:
        floor = max(floor, math.ceil(budget.min_epochs * len(image_hw) / train_steps))
    floor = max(1, min(max_ims_per_batch, floor))  # the fewest images per step allowed
    ims = max_ims_per_batch
    while ims > floor and want > math.sqrt(budget.step_pixels / (ims * short * long)):
        ims -= 1  # trade images for pixels only as far as the small objects need
    by_budget = math.sqrt(budget.step_pixels / (ims * short * long))
    scale = min(want, by_budget, budget.max_upscale)
    scale = min(max(scale, budget.min_short / short), budget.max_short / short)
    min_size = _round_to(short * scale, 8)
    while min_size > 8 and ims * min_size * min_size * long / short > budget.step_pixels \
            and min_size > budget.min_short:  # rounding must not break the budget
        min_size -= 8
    max_size = _round_to(min_size * aspect, 8)
    pixels = min_size * min_size * long / short
    fits = int(budget.step_pixels // max(pixels, 1.0))
    ims_per_batch = max(floor, min(max_ims_per_batch, fits))
    scale = min_size / short
    notes = {"wanted_scale": want, "budget_scale": by_budget, "small_px": small}
    epochs = ims_per_batch * train_steps / len(image_hw) if train_steps else 0.0
    test = _zoomed_size(min_size, min(want, budget.max_upscale) / scale, budget)
    if test == min_size or epochs < budget.zoom_min_epochs:
        return SizingChoice(min_size, max_size, ims_per_batch, scale, small * scale, notes)
    crop = max(0.1, round((min_size / test) ** 2 / 0.05) * 0.05)
    final = max(test, min(_round_to(test * budget.zoom_test_factor, 8), budget.max_short))
    return SizingChoice(final, _round_to(final * aspect, 8), ims_per_batch, final / short,
                        small * final / short, notes, train_size=min_size,
                        crop_min_scale=round(crop, 2), anchor_size=test)


def _zoomed_size(train_size: int, needed: float, budget: SizingBudget) -> int:
    """The test size: the training size times what the small objects still need, at most
    `max_zoom`, rounded to 8 px (the training size itself when they need nothing)."""
    zoom = min(needed, budget.max_zoom)  # `needed` already within max_upscale
    if zoom < 1.1:  # less than one rounding step of multi-scale training: not worth a crop
        return train_size
    return max(train_size, min(_round_to(train_size * zoom, 8), budget.max_short))


DEFAULT_RATIOS = (0.5, 1.0, 2.0)


def choose_anchors(box_wh: np.ndarray) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Anchor sizes and aspect ratios (h/w) for boxes float[B, 2] (w, h) in resized pixels.

    Sizes are octaves (powers of two, as FPN lays its anchors out) from the one nearest the
    1st percentile of the box sides up to the first at or above the 99th; ratios are the usual
    (0.5, 1, 2), widened by an octave on a side where more than 5% of the boxes are more
    elongated than the last ratio (anchors fitted tightly to the boxes covered them better by
    IoU yet trained a clearly worse RPN on the synthetic shapes; README has the numbers).
    """
    if len(box_wh) == 0:
        return (32, 64, 128, 256), DEFAULT_RATIOS
    sides = np.sqrt(box_wh[:, 0] * box_wh[:, 1])
    lo, hi = (float(np.percentile(sides, p)) for p in (1, 99))
    first = max(3, round(math.log2(max(lo, 8.0))))
    last = max(first + 1, math.ceil(math.log2(max(hi, 1.0))))
    sizes = tuple(2**k for k in range(first, last + 1))
    aspect = box_wh[:, 1] / np.maximum(box_wh[:, 0], 1e-6)
    ratios = list(DEFAULT_RATIOS)
    while float(np.mean(aspect < ratios[0] / math.sqrt(2))) > 0.05 and ratios[0] > 1 / 16:
        ratios.insert(0, ratios[0] / 2)
    while float(np.mean(aspect > ratios[-1] * math.sqrt(2))) > 0.05 and ratios[-1] < 16:
        ratios.append(ratios[-1] * 2)
    return sizes, tuple(ratios)


def anchor_coverage(
    box_wh: np.ndarray, sizes: tuple[int, ...], ratios: tuple[float, ...], iou: float = 0.5
) -> float:
    """Share of boxes (w, h) that an anchor of the same centre overlaps with IoU >= `iou`
    (torchvision's anchors: w = size / sqrt(r), h = size * sqrt(r))."""
    if len(box_wh) == 0:
        return 1.0
    a = np.array([(s / math.sqrt(r), s * math.sqrt(r)) for s in sizes for r in ratios])
    covered = 0
    for start in range(0, len(box_wh), _COVERAGE_CHUNK):  # [chunk, anchors] at a time
        chunk = box_wh[start:start + _COVERAGE_CHUNK]
        w, h = chunk[:, :1], chunk[:, 1:]
        inter = np.minimum(w, a[None, :, 0]) * np.minimum(h, a[None, :, 1])
        union = w * h + a[None, :, 0] * a[None, :, 1] - inter
        covered += int(np.count_nonzero((inter / union).max(axis=1) >= iou))
    return covered / len(box_wh)


_COVERAGE_CHUNK = 32768  # boxes per step: COCO's 860k boxes x 35 anchors at once took ~1 GiB
