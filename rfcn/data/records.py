"""Per-image annotation records shared by the dataset readers, stored as compact columns.

A reader (COCO JSON, VOC XML) parses its files once into a `RecordTable`: a few flat numpy
arrays (image ids, sizes, file names as one byte buffer, all boxes of all images in one
array with per-image offsets), not one Python object per image or box. DataLoader workers
forked from the process share these pages; reading a record touches no Python object's
reference count, so the pages stay shared (no copy-on-write growth over an epoch), and the
table saves to and loads from ``.npz`` without pickle.

Boxes are checked here, the same way for every format: non-finite or empty boxes are
dropped, boxes reaching outside the image are clipped (dropped if nothing is left). Each kind
of bad record is counted in a `BadRecordCounter`, which the reader logs as ONE warning at
construction.

Shape shorthand: N images, M boxes of all images, Mi boxes of image i, B bytes of file names.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from rfcn.data.image_io import read_image_rgb, to_tensor
from rfcn.data.interfaces import Transform

__all__ = [
    "BadRecordCounter",
    "RecordDataset",
    "RecordTable",
    "clean_box",
    "clean_boxes",
    "to_uint8_tensor",
]


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


def clean_boxes(
    boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray, bad: BadRecordCounter
) -> tuple[np.ndarray, np.ndarray]:
    """`clean_box` for many boxes at once, counting the same problems.

    Args:
        boxes: float64[M, 4] xyxy pixels.
        widths, heights: [M] size of the image of each box.

    Returns:
        (keep bool[M], float64[M, 4] the boxes clipped to their image; rows not kept are
        meaningless).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.asarray(widths, dtype=np.float64)
    h = np.asarray(heights, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(boxes).all(axis=1)
        x1, y1, x2, y2 = boxes.T
        positive = finite & (x2 > x1) & (y2 > y1)
        clipped = np.stack([np.minimum(np.maximum(x1, 0.0), w), np.minimum(np.maximum(y1, 0.0), h),
                            np.minimum(np.maximum(x2, 0.0), w), np.minimum(np.maximum(y2, 0.0), h)],
                           axis=1)
        keep = positive & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        changed = keep & (clipped != boxes).any(axis=1)
    for reason, n in (("boxes with non-finite coordinates dropped", (~finite).sum()),
                      ("boxes with zero or negative size dropped", (finite & ~positive).sum()),
                      ("boxes entirely outside the image dropped", (positive & ~keep).sum()),
                      ("boxes reaching outside the image clipped", changed.sum())):
        if n:
            bad.add(reason, int(n))
    return keep, clipped


def to_uint8_tensor(image: np.ndarray) -> torch.Tensor:
    """``np.ndarray[H, W, 3]`` uint8 RGB -> ``Tensor[3, H, W]`` uint8, a view of the H x W x 3
    memory (no copy: the transposition happens in the model's float conversion, on its
    device, at no extra cost).

    ``to_uint8_tensor(x).float().div_(255)`` equals ``rfcn.data.image_io.to_tensor(x)``
    bit for bit; the model's transform does that conversion (on its device).
    """
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(1, np.int64), np.cumsum(counts, dtype=np.int64)])


@dataclass(frozen=True, eq=False)
class RecordTable:
    """Every image's record in flat columns (see the module docstring).

    Image ``i``: file name ``name_bytes[name_offsets[i]:name_offsets[i + 1]]`` (UTF-8), boxes
    ``boxes[box_offsets[i]:box_offsets[i + 1]]`` and the labels and flags of the same rows.
    """

    image_ids: np.ndarray  # int64 [N]
    heights: np.ndarray  # int32 [N]
    widths: np.ndarray  # int32 [N]
    name_bytes: np.ndarray  # uint8 [B]
    name_offsets: np.ndarray  # int64 [N + 1]
    box_offsets: np.ndarray  # int64 [N + 1]
    boxes: np.ndarray  # float32 [M, 4] xyxy pixels
    labels: np.ndarray  # int64 [M], 1..C
    iscrowd: np.ndarray  # bool [M]
    difficult: np.ndarray  # bool [M]

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        image_ids: Sequence[int] | np.ndarray,
        heights: Sequence[int] | np.ndarray,
        widths: Sequence[int] | np.ndarray,
        owner: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        iscrowd: np.ndarray,
        difficult: np.ndarray,
    ) -> RecordTable:
        """From per-image lists of length N and per-box arrays of length M, where ``owner``
        int64[M] is the image index of each box; the boxes of an image keep their order."""
        n = len(names)
        encoded = [s.encode("utf-8") for s in names]
        order = np.argsort(owner, kind="stable")
        table = cls(
            image_ids=np.asarray(image_ids, dtype=np.int64).reshape(n),
            heights=np.asarray(heights, dtype=np.int32).reshape(n),
            widths=np.asarray(widths, dtype=np.int32).reshape(n),
            name_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            name_offsets=_offsets(np.fromiter(map(len, encoded), np.int64, n)),
            box_offsets=_offsets(np.bincount(np.asarray(owner, np.int64), minlength=n)),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[order],
            labels=np.asarray(labels, dtype=np.int64)[order],
            iscrowd=np.asarray(iscrowd, dtype=bool)[order],
            difficult=np.asarray(difficult, dtype=bool)[order],
        )
        table.validate()
        return table

    def validate(self) -> None:
        """Raise ValueError if the columns do not fit together (e.g. a damaged cache)."""
        n, m = len(self.image_ids), len(self.boxes)
        checks = [
            self.heights.shape == (n,) and self.widths.shape == (n,),
            self.boxes.ndim == 2 and self.boxes.shape[1] == 4,
            all(len(a) == m and a.ndim == 1 for a in (self.labels, self.iscrowd,
                                                      self.difficult)),
            self.box_offsets.shape == (n + 1,) and self.name_offsets.shape == (n + 1,),
        ]
        for off, end in ((self.box_offsets, m), (self.name_offsets, len(self.name_bytes))):
            checks.append(len(off) > 0 and off[0] == 0 and off[-1] == end
                          and bool((np.diff(off) >= 0).all()))
        if not all(checks):
            raise ValueError("record columns of inconsistent lengths")

    def __len__(self) -> int:
        return len(self.image_ids)

    def name(self, index: int) -> str:
        """The file name of image ``index`` (as written in the annotations)."""
        a, b = self.name_offsets[index], self.name_offsets[index + 1]
        return self.name_bytes[a:b].tobytes().decode("utf-8")

    def names(self) -> list[str]:
        """All file names (a new list)."""
        return [self.name(i) for i in range(len(self))]

    def target(self, index: int) -> dict[str, Any]:
        """The target dict of image ``index``, in original image pixels (fresh tensors).

        Keys: boxes float32 Tensor[Mi, 4] xyxy, labels int64 Tensor[Mi], image_id int,
        iscrowd bool Tensor[Mi], difficult bool Tensor[Mi], orig_size (h, w).
        """
        a, b = int(self.box_offsets[index]), int(self.box_offsets[index + 1])
        return {
            "boxes": torch.from_numpy(self.boxes[a:b].copy()),
            "labels": torch.from_numpy(self.labels[a:b].copy()),
            "image_id": int(self.image_ids[index]),
            "iscrowd": torch.from_numpy(self.iscrowd[a:b].copy()),
            "difficult": torch.from_numpy(self.difficult[a:b].copy()),
            "orig_size": (int(self.heights[index]), int(self.widths[index])),
        }

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The columns by name (``prefix + field``), e.g. for ``np.savez``."""
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> RecordTable:
        """Inverse of `arrays`; ValueError when a column is missing or they do not fit."""
        try:
            table = cls(**{f.name: arrays[prefix + f.name] for f in fields(cls)})
        except KeyError as e:
            raise ValueError(f"record column {e} missing") from None
        table.validate()
        return table


class RecordDataset:
    """The DetectionDataset access methods of a reader that parsed its files into
    ``self._table`` (a `RecordTable` whose names are relative to ``self._image_root``) and
    keeps its default ``self.transforms``."""

    _table: RecordTable
    _image_root: str
    transforms: Transform | None

    def __len__(self) -> int:
        return len(self._table)

    @property
    def image_ids(self) -> list[int]:
        """Image id of every index (a new list; the ids are stored as one int64 array)."""
        return self._table.image_ids.tolist()

    @property
    def aspect_ratios(self) -> list[float]:
        """w / h of every image (a new list)."""
        return (self._table.widths / self._table.heights).tolist()

    def image_path(self, index: int) -> str:
        return os.path.join(self._image_root, self._table.name(index))

    def record_table(self) -> RecordTable:
        """Every image's record as columns (read-only: shared with the loader workers)."""
        return self._table

    def get_annotation(self, index: int) -> dict[str, Any]:
        """Target of image ``index`` in original pixels, without decoding the image."""
        return self._table.target(index)

    def load_image(self, index: int) -> np.ndarray:
        """``np.ndarray[H, W, 3]`` uint8 RGB.

        Raises ValueError naming the file if it is missing/corrupt or its size differs from the
        size in the annotations (boxes would not line up with the pixels).
        """
        path = self.image_path(index)
        image = read_image_rgb(path)
        expected = (int(self._table.heights[index]), int(self._table.widths[index]))
        if image.shape[:2] != expected:
            raise ValueError(f"{path}: image size (h, w) = {image.shape[:2]} differs from the "
                             f"annotation's {expected}")
        return image

    def sample(
        self, index: int, rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Decoded and transformed sample ``index``: (``np.ndarray[H, W, 3]`` uint8 RGB,
        target), with ``transforms`` (default: the dataset's) driven by ``rng`` (default: a
        fresh unseeded generator; use the loaders for reproducible augmentation)."""
        image = self.load_image(index)
        target = self.get_annotation(index)
        tf = transforms if transforms is not None else self.transforms
        if tf is not None:
            image, target = tf(image, target, rng if rng is not None else np.random.default_rng())
        return image, target

    def get(
        self,
        index: int,
        rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sample ``index`` as (Tensor[3, H, W] float32 RGB in [0, 1], target); see `sample`."""
        image, target = self.sample(index, rng, transforms)
        return to_tensor(image), target

    def get_uint8(
        self,
        index: int,
        rng: np.random.Generator | None = None,
        transforms: Transform | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sample ``index`` as (Tensor[3, H, W] uint8 RGB, target): what loader workers hand
        back (4x smaller than float32); the model's transform converts it."""
        image, target = self.sample(index, rng, transforms)
        return to_uint8_tensor(image), target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.get(index)
