"""The two interfaces of the data package: a transform and a detection dataset."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["DetectionDataset", "Transform"]


class Transform(Protocol):
    """``(image np.ndarray[H, W, 3] uint8 RGB, target, rng) -> (image, target)``; boxes in
    ``target`` are float32 Tensor[M, 4] xyxy pixels of ``image``; randomness only from rng."""

    def __call__(
        self, image: np.ndarray, target: dict[str, Any], rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]: ...


class DetectionDataset(Protocol):
    """What the loaders and evaluators use from a dataset.

    ``get`` returns float32 images in [0, 1] (``ds[i]``); ``get_uint8`` the same pixels as
    uint8 Tensor[3, H, W], which the loaders' workers hand back (the model converts them).
    """

    class_names: list[str]
    aspect_ratios: list[float]
    image_ids: list[int]
    label_to_cat_id: dict[int, int]
    cat_id_to_label: dict[int, int]

    def __len__(self) -> int: ...
    def image_path(self, index: int) -> str: ...
    def get_annotation(self, index: int) -> dict[str, Any]: ...
    def load_image(self, index: int) -> np.ndarray: ...
    def get(
        self, index: int, rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...
    def get_uint8(
        self, index: int, rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...
