"""Dataset statistics from the annotations alone (no image is decoded).

`dataset_statistics(dataset)` walks ``dataset.get_annotation(i)`` once and keeps the raw
per-box and per-image arrays (numpy) in a `DatasetStatistics`; everything else (counts,
percentiles, histograms, the text report) is derived from those arrays. The arrays are what
data-aware anchor / size selection consumes (e.g. `DatasetStatistics.scaled_box_sizes`).

Which boxes count where:
- counts (`boxes_per_class`, `num_boxes`) include every box, crowd and difficult ones too;
- sizes, aspect ratios, percentiles and histograms use the boxes a detector trains on,
  ``stats.kept`` = not crowd and not difficult (crowd regions are ignored in training, VOC
  "difficult" boxes too); non-finite values (a zero-width box in a foreign dataset) are left
  out of percentiles and histograms.

Fixed histogram bin edges (`to_dict`), so histograms of two datasets compare bin by bin;
values outside the edges are counted in the first / last bin:
- `SIDE_PX_EDGES`: box side in pixels (sqrt(area), width, height), half-octave log scale,
  2**0 = 1 px ... 2**13 = 8192 px (26 bins).
- `REL_SIZE_EDGES`: box size relative to its image (sqrt(area / image area), w / W, h / H),
  0 ... 1 in steps of 0.05 (20 bins).
- `LOG2_ASPECT_EDGES`: log2 of the aspect ratio h / w, -4 ... 4 in steps of 0.25 (32 bins;
  1/16 ... 16).

Shape shorthand: N = number of images, B = number of boxes (all images together).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "LOG2_ASPECT_EDGES",
    "PERCENTILES",
    "REL_SIZE_EDGES",
    "SIDE_PX_EDGES",
    "AnnotatedDataset",
    "DatasetStatistics",
    "dataset_statistics",
    "format_statistics",
]

logger = logging.getLogger(__name__)

SIDE_PX_EDGES: np.ndarray = 2.0 ** np.arange(0.0, 13.25, 0.5)
REL_SIZE_EDGES: np.ndarray = np.linspace(0.0, 1.0, 21)
LOG2_ASPECT_EDGES: np.ndarray = np.arange(-4.0, 4.125, 0.25)
PERCENTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)


class AnnotatedDataset(Protocol):
    """What the statistics need from a dataset (a subset of `DetectionDataset`)."""

    class_names: list[str]

    def __len__(self) -> int: ...
    def get_annotation(self, index: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DatasetStatistics:
    """Raw annotation arrays of a dataset; derived values are properties.

    Attributes:
        class_names: index = label, ``class_names[0]`` is the background.
        image_sizes: int64 [N, 2] (h, w) of every image.
        box_image: int64 [B] index (0..N-1) of the image each box belongs to.
        box_wh: float64 [B, 2] (width, height) of every box in original pixels.
        box_labels: int64 [B] in 1..C.
        iscrowd, difficult: bool [B].
    """

    class_names: list[str]
    image_sizes: np.ndarray
    box_image: np.ndarray
    box_wh: np.ndarray
    box_labels: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray

    @property
    def num_images(self) -> int:
        return int(self.image_sizes.shape[0])

    @property
    def num_boxes(self) -> int:
        return int(self.box_labels.shape[0])

    @property
    def kept(self) -> np.ndarray:
        """bool [B]: boxes a detector trains on (neither crowd nor difficult)."""
        return ~(self.iscrowd | self.difficult)

    @property
    def widths(self) -> np.ndarray:
        """float64 [B] box widths in pixels."""
        return self.box_wh[:, 0]

    @property
    def heights(self) -> np.ndarray:
        """float64 [B] box heights in pixels."""
        return self.box_wh[:, 1]

    @property
    def sqrt_areas(self) -> np.ndarray:
        """float64 [B] sqrt(w * h): the side of the square of the same area, in pixels."""
        return np.sqrt(self.widths * self.heights)

    @property
    def aspect_ratios(self) -> np.ndarray:
        """float64 [B] h / w (> 1: tall boxes)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.heights / self.widths

    @property
    def rel_widths(self) -> np.ndarray:
        """float64 [B] w / W (W: width of the box's image)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.widths / self.image_sizes[self.box_image, 1]

    @property
    def rel_heights(self) -> np.ndarray:
        """float64 [B] h / H."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.heights / self.image_sizes[self.box_image, 0]

    @property
    def rel_sizes(self) -> np.ndarray:
        """float64 [B] sqrt(w * h) / sqrt(W * H)."""
        hw = self.image_sizes[self.box_image].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sqrt_areas / np.sqrt(hw[:, 0] * hw[:, 1])

    @property
    def boxes_per_image(self) -> np.ndarray:
        """int64 [N] number of boxes (all kinds) of every image."""
        return np.bincount(self.box_image, minlength=self.num_images).astype(np.int64)

    @property
    def num_images_without_boxes(self) -> int:
        return int((self.boxes_per_image == 0).sum())

    @property
    def num_images_without_kept_boxes(self) -> int:
        """Images with no box a detector trains on (none at all, or only crowd/difficult)."""
        kept = np.bincount(self.box_image[self.kept], minlength=self.num_images)
        return int((kept == 0).sum())

    def per_class_counts(self, mask: np.ndarray | None = None) -> dict[str, int]:
        """Class name -> number of boxes (those selected by ``mask``, bool [B]), every
        foreground class listed, in label order."""
        labels = self.box_labels if mask is None else self.box_labels[mask]
        counts = np.bincount(labels, minlength=len(self.class_names))
        return {name: int(counts[i]) for i, name in enumerate(self.class_names) if i > 0}

    @property
    def boxes_per_class(self) -> dict[str, int]:
        """Class name -> number of boxes, crowd and difficult included."""
        return self.per_class_counts()

    def scaled_box_sizes(self, min_size: int, max_size: int) -> np.ndarray:
        """float64 [B, 2] (w, h) of every box after the model's resize (shorter image side to
        ``min_size``, longer side at most ``max_size``, as `rfcn.models.transform`), the
        sizes anchors must cover."""
        hw = self.image_sizes[self.box_image].astype(np.float64)
        scale = np.minimum(min_size / hw.min(axis=1), max_size / hw.max(axis=1))
        return self.box_wh * scale[:, None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: counts, percentiles (``p1`` ... ``p99``, None without data) and
        histograms over the fixed bin edges of the module docstring."""
        kept = self.kept
        short = self.image_sizes.min(axis=1) if self.num_images else np.zeros(0)
        long = self.image_sizes.max(axis=1) if self.num_images else np.zeros(0)
        return {
            "num_images": self.num_images,
            "num_images_without_boxes": self.num_images_without_boxes,
            "num_images_without_kept_boxes": self.num_images_without_kept_boxes,
            "num_boxes": self.num_boxes,
            "num_boxes_kept": int(kept.sum()),
            "num_crowd": int(self.iscrowd.sum()),
            "num_difficult": int(self.difficult.sum()),
            "boxes_per_class": self.boxes_per_class,
            "image_sizes_most_common": [
                [h, w, n] for (h, w), n in Counter(map(tuple, self.image_sizes.tolist()))
                .most_common(10)
            ],
            "percentiles": {
                "box_sqrt_area_px": _percentiles(self.sqrt_areas[kept]),
                "box_rel_size": _percentiles(self.rel_sizes[kept]),
                "box_aspect_ratio": _percentiles(self.aspect_ratios[kept]),
                "image_short_side": _percentiles(short),
                "image_long_side": _percentiles(long),
            },
            "histograms": self._histograms(kept),
        }

    def _histograms(self, kept: np.ndarray) -> dict[str, Any]:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_aspect = np.log2(self.aspect_ratios[kept])
        return {
            "box_side_px": {
                "edges": SIDE_PX_EDGES.tolist(),
                "sqrt_area": _histogram(self.sqrt_areas[kept], SIDE_PX_EDGES),
                "width": _histogram(self.widths[kept], SIDE_PX_EDGES),
                "height": _histogram(self.heights[kept], SIDE_PX_EDGES),
            },
            "box_rel_size": {
                "edges": REL_SIZE_EDGES.tolist(),
                "sqrt_area": _histogram(self.rel_sizes[kept], REL_SIZE_EDGES),
                "width": _histogram(self.rel_widths[kept], REL_SIZE_EDGES),
                "height": _histogram(self.rel_heights[kept], REL_SIZE_EDGES),
            },
            "log2_aspect_ratio": {
                "edges": LOG2_ASPECT_EDGES.tolist(),
                "counts": _histogram(log_aspect, LOG2_ASPECT_EDGES),
            },
        }


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    """``{"p1": ..., "p99": ...}`` (numpy's default linear interpolation) of the finite
    values; None when there are none."""
    values = _finite(values)
    if values.size == 0:
        return {f"p{q}": None for q in PERCENTILES}
    levels = np.percentile(values, PERCENTILES)
    return {f"p{q}": float(v) for q, v in zip(PERCENTILES, levels, strict=True)}


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts per bin of the finite values, those outside the edges in the end bins."""
    values = np.clip(_finite(values), edges[0], edges[-1])
    counts, _ = np.histogram(values, bins=edges)
    return counts.astype(int).tolist()


def _flags(ann: dict[str, Any], key: str, m: int) -> np.ndarray:
    value = ann.get(key)
    if value is None:
        return np.zeros(m, dtype=bool)
    return np.asarray(value, dtype=bool).reshape(-1)


def _table_statistics(class_names: list[str], table: Any) -> DatasetStatistics:
    """The same statistics from a `rfcn.data.records.RecordTable`'s columns at once (no
    per-image loop: 118k COCO images in well under a second instead of seconds)."""
    num_classes = len(class_names) - 1
    labels = np.asarray(table.labels, dtype=np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        bad = int(np.searchsorted(table.box_offsets, int(np.flatnonzero(
            (labels < 1) | (labels > num_classes))[0]), side="right") - 1)
        lab = labels[table.box_offsets[bad]:table.box_offsets[bad + 1]]
        raise ValueError(f"annotation {bad}: labels must be in 1..{num_classes}, got "
                         f"{lab.min()}..{lab.max()}")
    boxes = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    n = len(table)
    return DatasetStatistics(
        class_names=list(class_names),
        image_sizes=np.stack([table.heights, table.widths], axis=1).astype(np.int64),
        box_image=np.repeat(np.arange(n, dtype=np.int64), np.diff(table.box_offsets)),
        box_wh=boxes[:, 2:] - boxes[:, :2],
        box_labels=labels,
        iscrowd=np.asarray(table.iscrowd, dtype=bool),
        difficult=np.asarray(table.difficult, dtype=bool),
    )


def dataset_statistics(dataset: AnnotatedDataset) -> DatasetStatistics:
    """Collect the `DatasetStatistics` of ``dataset`` from ``get_annotation(i)`` only.

    Each annotation must hold ``boxes`` [M, 4] xyxy pixels, ``labels`` [M] in 1..C and
    ``orig_size`` (h, w); ``iscrowd`` / ``difficult`` [M] are optional (False). Tensors or
    numpy arrays. A dataset with ``record_table()`` (the readers of rfcn.data.records)
    gives its columns instead, read at once; the result is the same.

    Raises:
        ValueError: an annotation without ``orig_size`` / with mismatched lengths, or a label
            outside 1..C (C = ``len(dataset.class_names) - 1``).
    """
    num_classes = len(dataset.class_names) - 1
    table = dataset.record_table() if hasattr(dataset, "record_table") else None
    if table is not None:
        return _table_statistics(dataset.class_names, table)
    n = len(dataset)
    sizes = np.zeros((n, 2), dtype=np.int64)
    per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for i in range(n):
        ann = dataset.get_annotation(i)
        if ann.get("orig_size") is None:
            raise ValueError(f"annotation {i} has no orig_size (h, w)")
        sizes[i] = [int(v) for v in ann["orig_size"]]
        boxes = np.asarray(ann["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(ann["labels"], dtype=np.int64).reshape(-1)
        m = boxes.shape[0]
        crowd, difficult = _flags(ann, "iscrowd", m), _flags(ann, "difficult", m)
        if not labels.shape[0] == crowd.shape[0] == difficult.shape[0] == m:
            raise ValueError(f"annotation {i}: boxes, labels, iscrowd, difficult lengths differ")
        if m and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"annotation {i}: labels must be in 1..{num_classes}, got "
                             f"{labels.min()}..{labels.max()}")
        wh = boxes[:, 2:] - boxes[:, :2]
        per_image.append((wh, labels, crowd, difficult))
    counts = np.array([p[1].shape[0] for p in per_image], dtype=np.int64)
    stats = DatasetStatistics(
        class_names=list(dataset.class_names),
        image_sizes=sizes,
        box_image=np.repeat(np.arange(n, dtype=np.int64), counts),
        box_wh=np.concatenate([p[0] for p in per_image] or [np.zeros((0, 2))]).reshape(-1, 2),
        box_labels=np.concatenate([p[1] for p in per_image] or [np.zeros(0, np.int64)]),
        iscrowd=np.concatenate([p[2] for p in per_image] or [np.zeros(0, bool)]),
        difficult=np.concatenate([p[3] for p in per_image] or [np.zeros(0, bool)]),
    )
    logger.debug("dataset statistics: %d images, %d boxes", stats.num_images, stats.num_boxes)
    return stats


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _percentile_lines(stats: DatasetStatistics) -> list[str]:
    pct = stats.to_dict()["percentiles"]
    rows = [
        ("box sqrt(area) px", pct["box_sqrt_area_px"], 1),
        ("box rel. size", pct["box_rel_size"], 3),
        ("box aspect h/w", pct["box_aspect_ratio"], 2),
        ("image shorter side", pct["image_short_side"], 0),
        ("image longer side", pct["image_long_side"], 0),
    ]
    head = f"{'':<20}" + "".join(f"{'p' + str(q):>9}" for q in PERCENTILES)
    lines = [head]
    for name, values, digits in rows:
        lines.append(f"{name:<20}" + "".join(f"{_fmt(values[f'p{q}'], digits):>9}"
                                             for q in PERCENTILES))
    return lines


def _class_lines(stats: DatasetStatistics) -> list[str]:
    total = stats.boxes_per_class
    crowd = stats.per_class_counts(stats.iscrowd)
    difficult = stats.per_class_counts(stats.difficult)
    width = max([len("class")] + [len(n) for n in total])
    lines = [f"{'class':<{width}} {'boxes':>8} {'share':>7} {'crowd':>7} {'difficult':>9}"]
    for name, n in total.items():
        share = 100.0 * n / stats.num_boxes if stats.num_boxes else 0.0
        lines.append(f"{name:<{width}} {n:>8} {share:>6.1f}% {crowd[name]:>7} "
                     f"{difficult[name]:>9}")
    return lines


def format_statistics(stats: DatasetStatistics, dropped: dict[str, int] | None = None) -> str:
    """A readable report: images, boxes per class, size / aspect percentiles and the
    records the reader dropped (``dropped``: reason -> count, as
    ``BadRecordCounter.counts`` / ``dataset.bad_records`` hold it; None: section left out)."""
    kept = int(stats.kept.sum())
    lines = [
        f"images: {stats.num_images} ({stats.num_images_without_boxes} without boxes, "
        f"{stats.num_images_without_kept_boxes} without trainable boxes)",
        f"boxes: {stats.num_boxes} ({int(stats.iscrowd.sum())} crowd, "
        f"{int(stats.difficult.sum())} difficult; {kept} used for sizes)",
        "",
        *_class_lines(stats),
        "",
        *_percentile_lines(stats),
    ]
    if dropped is not None:
        lines += ["", f"records dropped or fixed by the reader: {sum(dropped.values())}"]
        lines += [f"{n:>8}  {reason}" for reason, n in sorted(dropped.items())]
    return "\n".join(lines)
