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
    "RandomHorizontalFlip",
    "RandomResize",
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


class RandomHorizontalFlip:
    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        # Always draw, so the stream of random numbers does not depend on `prob`.
        if rng.random() >= self.prob:
            return image, target
        w = image.shape[1]
        image = np.ascontiguousarray(image[:, ::-1])
        boxes = target["boxes"]
        flipped = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return image, {**target, "boxes": flipped.reshape(-1, 4)}

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


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
    """Random brightness, contrast and saturation, each a factor in [1 - s, 1 + s]."""

    def __init__(self, strength: float) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"color jitter strength must be in [0, 1), got {strength}")
        self.strength = strength

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
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), target

    def __repr__(self) -> str:
        return f"ColorJitter(strength={self.strength})"


def build_train_transforms(
    min_sizes: int | Sequence[int],
    max_size: int,
    flip_prob: float = 0.5,
    color_jitter: float = 0.0,
) -> Compose:
    """The standard training pipeline: [colour jitter], multi-scale resize, horizontal flip."""
    ts: list[Transform] = []
    if color_jitter > 0:
        ts.append(ColorJitter(color_jitter))
    ts.append(RandomResize(min_sizes, max_size))
    ts.append(RandomHorizontalFlip(flip_prob))
    return Compose(ts)
