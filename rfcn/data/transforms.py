"""Training augmentation with OpenCV, applied to the image and its boxes together.

A transform is a callable ``(image, target, rng) -> (image, target)``: image
``np.ndarray[H, W, 3]`` uint8 RGB, target a dict whose ``boxes`` is a float32 Tensor[M, 4]
xyxy in pixels of that image, ``rng`` a ``np.random.Generator``. All randomness comes from
``rng``, so the loaders make augmentation a pure function of their per-sample seeds.
Coordinates are continuous: pixel column ``i`` spans ``[i, i + 1)``, so a box ``[x1, x2]``
flips to ``[W - x2, W - x1]`` and scales with the image size.

The model normalises and does the final resize (torchvision convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from rfcn.data.interfaces import Transform

__all__ = [
    "ColorJitter",
    "Compose",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResize",
    "RandomVerticalFlip",
    "build_train_transforms",
    "resize_scale",
]

Target = dict[str, Any]


class Compose:
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _flip(image: np.ndarray, target: Target, vertical: bool) -> tuple[np.ndarray, Target]:
    """Mirror the image left-right (or top-bottom) and its boxes with it."""
    b = target["boxes"]
    # cv2.flip: a left-right mirror of HxWx3 uint8 is 15x faster than numpy's strided copy
    if vertical:
        h = image.shape[0]
        image = cv2.flip(np.ascontiguousarray(image), 0)
        flipped = torch.stack([b[:, 0], h - b[:, 3], b[:, 2], h - b[:, 1]], 1)
    else:
        w = image.shape[1]
        image = cv2.flip(np.ascontiguousarray(image), 1)
        flipped = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    return image, {**target, "boxes": flipped.reshape(-1, 4)}


class RandomHorizontalFlip:
    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        # Always draw, so the stream of random numbers does not depend on `prob`.
        if rng.random() >= self.prob:
            return image, target
        return _flip(image, target, vertical=False)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


class RandomVerticalFlip:
    """Flip top-bottom with probability `prob` (for data without an up: microscopy, aerial)."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        if rng.random() >= self.prob:
            return image, target
        return _flip(image, target, vertical=True)

    def __repr__(self) -> str:
        return f"RandomVerticalFlip(prob={self.prob})"


_PER_BOX = ("boxes", "labels", "iscrowd", "difficult")


class RandomCrop:
    """With probability `prob`, keep a random window whose sides are each a fraction in
    [`min_scale`, 1] of the image's (the resize that follows then zooms in: scale jitter).
    Boxes are clipped to the window; a box keeping less than `min_visible` of its area, or
    under 2 px a side, is dropped (with its label and flags)."""

    def __init__(self, prob: float, min_scale: float = 0.6, min_visible: float = 0.4) -> None:
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"crop min_scale must be in (0, 1], got {min_scale}")
        self.prob, self.min_scale, self.min_visible = prob, min_scale, min_visible

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        draw = rng.random(5)  # always 5 numbers: the stream does not depend on the outcome
        if draw[0] >= self.prob:
            return image, target
        h, w = image.shape[:2]
        ch = max(1, round(h * (self.min_scale + (1 - self.min_scale) * draw[1])))
        cw = max(1, round(w * (self.min_scale + (1 - self.min_scale) * draw[2])))
        y0, x0 = int(draw[3] * (h - ch + 1)), int(draw[4] * (w - cw + 1))
        boxes = target["boxes"]
        shifted = boxes - torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
        clipped = torch.stack([shifted[:, 0].clamp(0, cw), shifted[:, 1].clamp(0, ch),
                               shifted[:, 2].clamp(0, cw), shifted[:, 3].clamp(0, ch)], 1)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        cw_, chh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        keep = (cw_ >= 2) & (chh >= 2) & (cw_ * chh >= self.min_visible * area)
        out = {**target, "boxes": clipped}
        for key in _PER_BOX:
            if key in out:
                out[key] = out[key][keep]
        return np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw]), out

    def __repr__(self) -> str:
        return f"RandomCrop(prob={self.prob}, min_scale={self.min_scale})"


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """Scale that brings the shorter side to ``min_size`` unless the longer exceeds ``max_size``."""
    return min(min_size / min(height, width), max_size / max(height, width))


class RandomResize:
    """Resize so the shorter side is a random choice of ``min_sizes`` (longer side <= max_size)."""

    def __init__(self, min_sizes: int | Sequence[int], max_size: int) -> None:
        self.min_sizes = [int(min_sizes)] if isinstance(min_sizes, int) else [
            int(s) for s in min_sizes]
        if not self.min_sizes or min(self.min_sizes) <= 0 or max_size <= 0:
            raise ValueError(f"invalid sizes: min_sizes={min_sizes!r}, max_size={max_size!r}")
        self.max_size = int(max_size)

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        min_size = self.min_sizes[int(rng.integers(len(self.min_sizes)))]
        h, w = image.shape[:2]
        scale = resize_scale(h, w, min_size, self.max_size)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        if (new_h, new_w) == (h, w):
            return image, target
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
        factor = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], dtype=torch.float32)
        return image, {**target, "boxes": target["boxes"] * factor}

    def __repr__(self) -> str:
        return f"RandomResize(min_sizes={self.min_sizes}, max_size={self.max_size})"


def _luma(img: np.ndarray) -> np.ndarray:
    # elementwise (no BLAS), so results do not depend on thread counts
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


class ColorJitter:
    """Random brightness, contrast and saturation, each a factor in [1 - s, 1 + s], and a hue
    shift of up to `hue` of the colour circle (0.5 = all the way)."""

    def __init__(self, strength: float, hue: float = 0.0) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"color jitter strength must be in [0, 1), got {strength}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
        self.strength, self.hue = strength, hue

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        s = self.strength
        brightness, contrast, saturation = rng.uniform(1.0 - s, 1.0 + s, size=3)
        img = image.astype(np.float32) * np.float32(brightness)
        mean = np.float32(_luma(img).mean())
        img = (img - mean) * np.float32(contrast) + mean
        gray = _luma(img)[..., None]
        img = (img - gray) * np.float32(saturation) + gray
        out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        if self.hue > 0:  # only then a fourth number: earlier configs keep their stream
            shift = int(round(rng.uniform(-self.hue, self.hue) * 180))  # OpenCV hue: 0..179
            hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return out, target

    def __repr__(self) -> str:
        return f"ColorJitter(strength={self.strength}, hue={self.hue})"


def build_train_transforms(
    min_sizes: int | Sequence[int],
    max_size: int,
    flip_prob: float = 0.5,
    color_jitter: float = 0.0,
    hue: float = 0.0,
    crop_prob: float = 0.0,
    crop_min_scale: float = 0.6,
    vflip_prob: float = 0.0,
) -> Compose:
    """The training pipeline: [photometric jitter], [random crop], multi-scale resize,
    horizontal flip, [vertical flip]."""
    ts: list[Transform] = []
    if color_jitter > 0 or hue > 0:
        ts.append(ColorJitter(color_jitter, hue))
    if crop_prob > 0:
        ts.append(RandomCrop(crop_prob, crop_min_scale))
    ts.append(RandomResize(min_sizes, max_size))
    ts.append(RandomHorizontalFlip(flip_prob))
    if vflip_prob > 0:
        ts.append(RandomVerticalFlip(vflip_prob))
    return Compose(ts)
