"""Per-image annotation records shared by the dataset readers.

A reader (COCO JSON, VOC XML) parses its files once into a list of `ImageRecord`; boxes are
checked here, the same way for every format: non-finite or empty boxes are dropped, boxes
reaching outside the image are clipped (dropped if nothing is left). Each kind of bad record
is counted in a `BadRecordCounter`, which the reader logs as ONE warning at construction.

Shape shorthand: M = number of boxes of one image.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rfcn.data.image_io import read_image_rgb, to_tensor
from rfcn.data.interfaces import Transform

__all__ = [
    "BadRecordCounter",
    "ImageRecord",
    "RecordDataset",
    "clean_box",
    "load_record_image",
    "load_record_sample",
    "record_target",
]


@dataclass(frozen=True)
class ImageRecord:
    """One image and its cleaned annotations (boxes xyxy float32 pixels, Tensor-free)."""

    path: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray  # float32 [M, 4]
    labels: np.ndarray  # int64 [M], 1..C
    iscrowd: np.ndarray  # bool [M]
    difficult: np.ndarray  # bool [M]


class BadRecordCounter:
    """Counts bad annotation records by reason; `warn` logs them all in one message."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n

    def total(self) -> int:
        return sum(self.counts.values())

    def warn(self, logger: logging.Logger, source: str) -> None:
        if not self.counts:
            return
        parts = [f"{n} {reason}" for reason, n in sorted(self.counts.items())]
        logger.warning("%s: %d bad annotation records: %s", source, self.total(), "; ".join(parts))


def clean_box(
    x1: float, y1: float, x2: float, y2: float, width: int, height: int, bad: BadRecordCounter
) -> tuple[float, float, float, float] | None:
    """Validate an xyxy pixel box against an image of (height, width).

    Returns the (possibly clipped) box, or None when it must be dropped; every problem is
    counted in ``bad``.
    """
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        bad.add("boxes with non-finite coordinates dropped")
        return None
    if x2 <= x1 or y2 <= y1:
        bad.add("boxes with zero or negative size dropped")
        return None
    cx1, cy1 = min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height))
    cx2, cy2 = min(max(x2, 0.0), float(width)), min(max(y2, 0.0), float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        bad.add("boxes entirely outside the image dropped")
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        bad.add("boxes reaching outside the image clipped")
    return cx1, cy1, cx2, cy2


def record_target(rec: ImageRecord) -> dict[str, Any]:
    """The target dict of a record, in original image pixels.

    Keys: boxes float32 Tensor[M, 4] xyxy, labels int64 Tensor[M], image_id int,
    iscrowd bool Tensor[M], difficult bool Tensor[M], orig_size (h, w).
    """
    return {
        "boxes": torch.from_numpy(rec.boxes.copy()).reshape(-1, 4),
        "labels": torch.from_numpy(rec.labels.copy()),
        "image_id": rec.image_id,
        "iscrowd": torch.from_numpy(rec.iscrowd.copy()),
        "difficult": torch.from_numpy(rec.difficult.copy()),
        "orig_size": (rec.height, rec.width),
    }


def load_record_image(rec: ImageRecord) -> np.ndarray:
    """Decode the record's image as ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises ValueError naming the file if it is missing/corrupt or its size differs from the
    size in the annotations (boxes would not line up with the pixels).
    """
    image = read_image_rgb(rec.path)
    if image.shape[:2] != (rec.height, rec.width):
        raise ValueError(
            f"{rec.path}: image size (h, w) = {image.shape[:2]} differs from the annotation's "
            f"({rec.height}, {rec.width})"
        )
    return image


def load_record_sample(
    rec: ImageRecord, transforms: Transform | None, rng: np.random.Generator | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Load, transform and convert one sample -> (Tensor[3, H, W] float32 RGB in [0, 1], target).

    Without ``rng`` a fresh unseeded generator drives the transforms (use the loaders for
    reproducible augmentation).
    """
    image = load_record_image(rec)
    target = record_target(rec)
    if transforms is not None:
        rng = rng if rng is not None else np.random.default_rng()
        image, target = transforms(image, target, rng)
    return to_tensor(image), target


class RecordDataset:
    """The DetectionDataset access methods of a reader that parsed its files into
    ``self._records`` (list of ImageRecord) and keeps its default ``self.transforms``."""

    _records: list[ImageRecord]
    transforms: Transform | None

    def __len__(self) -> int:
        return len(self._records)

    def image_path(self, index: int) -> str:
        return self._records[index].path

    def get_annotation(self, index: int) -> dict[str, Any]:
        """Target of image ``index`` in original pixels, without decoding the image."""
        return record_target(self._records[index])

    def load_image(self, index: int) -> np.ndarray:
        """``np.ndarray[H, W, 3]`` uint8 RGB; ValueError naming the file if unreadable."""
        return load_record_image(self._records[index])

    def get(
        self,
        index: int,
        rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sample ``index`` with ``transforms`` (default: the dataset's) driven by ``rng``."""
        tf = transforms if transforms is not None else self.transforms
        return load_record_sample(self._records[index], tf, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.get(index)
