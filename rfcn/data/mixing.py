"""Augmentations that mix several training images into one sample: mosaic and copy-paste.

`SampleMixer` runs in the loader's workers before the per-image transforms (flip, resize,
...). It draws everything from the sample's generator, so a mixed sample is, like every
other, a pure function of (seed, iteration), whatever ``num_workers``.

- **Mosaic** (YOLOv4 / ultralytics' ``load_mosaic``): the sample and 3 other images, each
  scaled to fit the sample's size h x w, are placed around a random centre of a 2h x 2w canvas;
  the central h x w window is the new image, so objects keep their scale and the aspect
  grouping of the sample still holds. A box is clipped to what is visible of it and kept when
  at least `min_visible` of its area, 2 px per side and an aspect below `max_aspect` remain.
- **Copy-paste** (Ghiasi et al. 2021, without masks): up to `copy_paste_max` boxes of another
  image are pasted, as their rectangles with a feathered edge, at random places of the sample
  where they cover less than `max_cover` of any box already there, scaled as the two images
  are (by the ratio of their sizes).

Both stop at iteration `off_after_iter` (ultralytics closes mosaic for the last epochs: the
final iterations train on images as the test set shows them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch

__all__ = ["SampleMixer", "copy_paste", "mosaic"]

Sample = tuple[np.ndarray, dict[str, Any]]
Loader = Callable[[int], Sample]  # dataset index -> (uint8 HxWx3 RGB, target); ValueError


def _fit(image: np.ndarray, h: int, w: int) -> tuple[np.ndarray, float]:
    s = min(h / image.shape[0], w / image.shape[1])
    if s == 1.0:
        return image, s
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), s


def _tile_regions(k: int, xc: int, yc: int, nw: int, nh: int, w2: int, h2: int
                  ) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Where tile ``k`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right of the
    centre) lands on the canvas (x1, y1, x2, y2), and the offset of its image's origin."""
    if k == 0:
        region = (max(xc - nw, 0), max(yc - nh, 0), xc, yc)
        return region, (xc - nw, yc - nh)
    if k == 1:
        region = (xc, max(yc - nh, 0), min(xc + nw, w2), yc)
        return region, (xc, yc - nh)
    if k == 2:
        region = (max(xc - nw, 0), yc, xc, min(yc + nh, h2))
        return region, (xc - nw, yc)
    return (xc, yc, min(xc + nw, w2), min(yc + nh, h2)), (xc, yc)


def _clip(boxes: torch.Tensor, x1: float, y1: float, x2: float, y2: float) -> torch.Tensor:
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(x1, x2)
    out[:, 1::2] = out[:, 1::2].clamp(y1, y2)
    return out


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _keep(target: dict[str, Any], keep: torch.Tensor, boxes: torch.Tensor) -> dict[str, Any]:
    out = dict(target)
    out["boxes"] = boxes[keep]
    for key in ("labels", "iscrowd", "difficult"):
        out[key] = target[key][keep]
    return out


def mosaic(samples: list[Sample], rng: np.random.Generator, min_visible: float = 0.25,
           max_aspect: float = 20.0, fill: int = 114) -> Sample:
    """Four samples into one of the first one's size (see the module docstring)."""
    h, w = samples[0][0].shape[:2]
    canvas = np.full((2 * h, 2 * w, 3), fill, dtype=np.uint8)
    xc, yc = int(rng.uniform(0.5 * w, 1.5 * w)), int(rng.uniform(0.5 * h, 1.5 * h))
    ox, oy = w // 2, h // 2  # the output window of the canvas
    parts = []
    for k, (image, target) in enumerate(samples):
        image, s = _fit(image, h, w)
        nh, nw = image.shape[:2]
        (x1, y1, x2, y2), (px, py) = _tile_regions(k, xc, yc, nw, nh, 2 * w, 2 * h)
        canvas[y1:y2, x1:x2] = image[y1 - py:y2 - py, x1 - px:x2 - px]
        full = target["boxes"].reshape(-1, 4) * s + torch.tensor([px, py, px, py],
                                                                  dtype=torch.float32)
        visible = _clip(_clip(full, x1, y1, x2, y2), ox, oy, ox + w, oy + h)
        bw, bh = visible[:, 2] - visible[:, 0], visible[:, 3] - visible[:, 1]
        keep = ((_area(visible) >= min_visible * _area(full).clamp(min=1e-6))
                & (bw >= 2) & (bh >= 2)
                & (torch.maximum(bw / bh.clamp(min=1e-6), bh / bw.clamp(min=1e-6))
                   < max_aspect))
        shifted = visible - torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
        parts.append(_keep(target, keep, shifted))
    first = samples[0][1]
    merged = {**first,
              **{key: torch.cat([p[key] for p in parts]) for key in
                 ("boxes", "labels", "iscrowd", "difficult")}}
    return np.ascontiguousarray(canvas[oy:oy + h, ox:ox + w]), merged


def _feather(h: int, w: int) -> np.ndarray:
    """An h x w x 1 alpha mask: 1 inside, ramping to 0 over a tenth of the side at the edge."""
    def ramp(n: int) -> np.ndarray:
        f = max(1, round(0.1 * n))
        i = np.arange(n, dtype=np.float32)
        return np.minimum(1.0, np.minimum(i + 1, n - i) / (f + 1))

    return np.minimum(ramp(h)[:, None], ramp(w)[None, :])[..., None]


def _cover(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """The fraction of each of ``boxes`` that ``box`` covers."""
    inter = _area(torch.stack([torch.maximum(boxes[:, 0], box[0]),
                               torch.maximum(boxes[:, 1], box[1]),
                               torch.minimum(boxes[:, 2], box[2]),
                               torch.minimum(boxes[:, 3], box[3])], 1))
    return inter / _area(boxes).clamp(min=1e-6)


def copy_paste(sample: Sample, donor: Sample, rng: np.random.Generator, max_boxes: int = 3,
               max_cover: float = 0.3, tries: int = 10) -> Sample:
    """``sample`` with up to ``max_boxes`` box rectangles of ``donor`` pasted into it."""
    image, target = sample
    d_image, d_target = donor
    h, w = image.shape[:2]
    scale = float(np.sqrt(h * w / (d_image.shape[0] * d_image.shape[1])))
    boxes = d_target["boxes"].reshape(-1, 4)
    usable = ~(d_target["iscrowd"] | d_target["difficult"]) & (_area(boxes) > 0)
    candidates = torch.nonzero(usable).flatten().tolist()
    if not candidates:
        return sample
    chosen = rng.permutation(candidates)[:int(rng.integers(1, max_boxes + 1))]
    image = image.copy()
    present = target["boxes"].reshape(-1, 4)
    added: list[tuple[list[float], int]] = []
    for j in chosen:
        x1, y1, x2, y2 = boxes[int(j)].tolist()
        xa, ya = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        xb = min(d_image.shape[1], int(np.ceil(x2)))
        yb = min(d_image.shape[0], int(np.ceil(y2)))
        pw, ph = round((xb - xa) * scale), round((yb - ya) * scale)
        if not (4 <= pw < w and 4 <= ph < h):
            continue
        patch = cv2.resize(d_image[ya:yb, xa:xb], (pw, ph), interpolation=cv2.INTER_LINEAR)
        for _ in range(tries):
            x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
            placed = torch.tensor([x, y, x + pw, y + ph], dtype=torch.float32)
            if len(present) == 0 or float(_cover(present, placed).max()) < max_cover:
                alpha = _feather(ph, pw)
                region = image[y:y + ph, x:x + pw].astype(np.float32)
                image[y:y + ph, x:x + pw] = np.round(
                    alpha * patch + (1 - alpha) * region).astype(np.uint8)
                present = torch.cat([present, placed[None]])
                added.append((placed.tolist(), int(d_target["labels"][int(j)])))
                break
    if not added:
        return sample
    n = len(added)
    out = dict(target)
    out["boxes"] = torch.cat([target["boxes"].reshape(-1, 4),
                              torch.tensor([b for b, _ in added], dtype=torch.float32)])
    out["labels"] = torch.cat([target["labels"], torch.tensor([c for _, c in added],
                                                              dtype=target["labels"].dtype)])
    out["iscrowd"] = torch.cat([target["iscrowd"], torch.zeros(n, dtype=torch.bool)])
    out["difficult"] = torch.cat([target["difficult"], torch.zeros(n, dtype=torch.bool)])
    return image, out


class SampleMixer:
    """Mosaic with probability `mosaic_prob`, then copy-paste with `copy_paste_prob`, for
    iterations before `off_after_iter` (None: always)."""

    def __init__(self, mosaic_prob: float = 0.0, copy_paste_prob: float = 0.0,
                 copy_paste_max: int = 3, off_after_iter: int | None = None) -> None:
        for name, p in (("mosaic_prob", mosaic_prob), ("copy_paste_prob", copy_paste_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"aug.{name}: {p} is not a probability in [0, 1]")
        if copy_paste_max < 1:
            raise ValueError(f"aug.copy_paste_max: {copy_paste_max} must be at least 1")
        self.mosaic_prob = float(mosaic_prob)
        self.copy_paste_prob = float(copy_paste_prob)
        self.copy_paste_max = int(copy_paste_max)
        self.off_after_iter = off_after_iter

    def active(self, iteration: int) -> bool:
        return (self.mosaic_prob > 0 or self.copy_paste_prob > 0) and (
            self.off_after_iter is None or iteration < self.off_after_iter)

    def __call__(self, load: Loader, num_images: int, index: int,
                 rng: np.random.Generator) -> Sample:
        """The (possibly mixed) raw sample ``index``; other images are drawn from ``rng``.
        A ValueError of any image read (an unreadable file) propagates."""
        sample = load(index)
        if rng.random() < self.mosaic_prob:
            others = [load(int(i)) for i in rng.integers(0, num_images, size=3)]
            sample = mosaic([sample, *others], rng)
        if rng.random() < self.copy_paste_prob:
            sample = copy_paste(sample, load(int(rng.integers(num_images))), rng,
                                self.copy_paste_max)
        return sample

    def __repr__(self) -> str:
        return (f"SampleMixer(mosaic_prob={self.mosaic_prob}, copy_paste_prob="
                f"{self.copy_paste_prob}, copy_paste_max={self.copy_paste_max}, "
                f"off_after_iter={self.off_after_iter})")
