"""Concatenation of detection datasets with the same classes (e.g. VOC 2007 + 2012 trainval)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rfcn.data.interfaces import DetectionDataset, Transform

__all__ = ["ConcatDetection"]


class ConcatDetection:
    """Datasets one after the other; they must share ``class_names`` and have distinct
    image ids. Each part keeps its own transforms."""

    def __init__(self, datasets: Sequence[DetectionDataset]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDetection needs at least one dataset")
        first = self.datasets[0]
        for k, ds in enumerate(self.datasets[1:], 1):
            if list(ds.class_names) != list(first.class_names):
                raise ValueError(
                    f"ConcatDetection: dataset {k} has classes {ds.class_names}, "
                    f"dataset 0 has {first.class_names}")
            if ds.label_to_cat_id != first.label_to_cat_id:
                raise ValueError(f"ConcatDetection: dataset {k} maps labels to other category ids")
        self.class_names: list[str] = list(first.class_names)
        self.label_to_cat_id: dict[int, int] = dict(first.label_to_cat_id)
        self.cat_id_to_label: dict[int, int] = dict(first.cat_id_to_label)
        ids = np.concatenate([np.asarray(ds.image_ids, dtype=np.int64).reshape(-1)
                              for ds in self.datasets])
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ConcatDetection: the datasets share image ids")
        self._image_ids = ids  # int64 [N]
        self._aspect_ratios = np.concatenate([  # float64 [N]
            np.asarray(ds.aspect_ratios, dtype=np.float64).reshape(-1) for ds in self.datasets])
        self._ends = list(np.cumsum([len(ds) for ds in self.datasets]))

    @property
    def image_ids(self) -> list[int]:
        """Image id of every index (a new list)."""
        return self._image_ids.tolist()

    @property
    def aspect_ratios(self) -> list[float]:
        """w / h of every image (a new list)."""
        return self._aspect_ratios.tolist()

    @property
    def bad_records(self) -> dict[str, int]:
        """Bad annotation records of every part, by reason."""
        total: dict[str, int] = {}
        for ds in self.datasets:
            for reason, n in getattr(ds, "bad_records", {}).items():
                total[reason] = total.get(reason, 0) + n
        return total

    def _locate(self, index: int) -> tuple[DetectionDataset, int]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        k = bisect.bisect_right(self._ends, index)
        start = self._ends[k - 1] if k else 0
        return self.datasets[k], int(index - start)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def image_path(self, index: int) -> str:
        ds, i = self._locate(index)
        return ds.image_path(i)

    def get_annotation(self, index: int) -> dict[str, Any]:
        ds, i = self._locate(index)
        return ds.get_annotation(i)

    def load_image(self, index: int) -> np.ndarray:
        ds, i = self._locate(index)
        return ds.load_image(i)

    def get(
        self,
        index: int,
        rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        ds, i = self._locate(index)
        return ds.get(i, rng, transforms)

    def get_uint8(
        self,
        index: int,
        rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        ds, i = self._locate(index)
        return ds.get_uint8(i, rng, transforms)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.get(index)

    def __repr__(self) -> str:
        return f"ConcatDetection({self.datasets!r})"
