"""COCO-format detection datasets: COCO itself and any custom data in COCO JSON.

Category ids map to contiguous labels 1..C in ascending id order (0 is the background);
``class_names[0] == "__background__"``. The JSON is validated on construction: structural
problems (not JSON, missing keys, wrong types) raise ``ValueError`` naming the file and what
is wrong; bad records (invalid boxes, annotations of unknown images or categories, images
with invalid sizes) are dropped or clipped, counted, and reported in one warning.
``.coco`` is a pycocotools ``COCO`` over the cleaned annotations, ready for COCOeval.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from numbers import Real
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from rfcn.data.interfaces import Transform
from rfcn.data.records import (
    BadRecordCounter,
    ImageRecord,
    RecordDataset,
    clean_box,
)

__all__ = ["CocoDetection", "load_coco_json"]

logger = logging.getLogger(__name__)

_TOP_KEYS = ("images", "annotations", "categories")
_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANN_KEYS = ("image_id", "category_id", "bbox")
_CAT_KEYS = ("id", "name")


def load_coco_json(ann_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a COCO-format JSON file and check its structure.

    Raises:
        ValueError: naming the file and the problem (unreadable, invalid JSON, missing keys,
            wrong types, duplicate ids).
    """
    path = os.fspath(ann_file)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read annotation file ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    for key in _TOP_KEYS:
        if key not in data:
            raise ValueError(f"{path}: missing top-level key '{key}'")
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    for section, keys in (("images", _IMAGE_KEYS), ("annotations", _ANN_KEYS),
                          ("categories", _CAT_KEYS)):
        for j, rec in enumerate(data[section]):
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: {section}[{j}] must be an object")
            for key in keys:
                if key not in rec:
                    raise ValueError(f"{path}: {section}[{j}] has no '{key}'")
    for section, singular in (("images", "image"), ("categories", "category")):
        seen: set[int] = set()
        for j, rec in enumerate(data[section]):
            rid = rec["id"]
            if not isinstance(rid, int) or isinstance(rid, bool):
                raise ValueError(f"{path}: {section}[{j}] id {rid!r} is not an integer")
            if rid in seen:
                raise ValueError(f"{path}: duplicate {singular} id {rid}")
            seen.add(rid)
    for j, img in enumerate(data["images"]):
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise ValueError(f"{path}: images[{j}] file_name must be a non-empty string")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _valid_size(img: dict[str, Any]) -> bool:
    w, h = img["width"], img["height"]
    return (_is_number(w) and _is_number(h) and math.isfinite(w) and math.isfinite(h)
            and int(w) == w and int(h) == h and w > 0 and h > 0)


class CocoDetection(RecordDataset):
    """A COCO-format dataset: ``ds[i] -> (Tensor[3, H, W] float32 RGB in [0, 1], target)``.

    target: boxes float32 Tensor[M, 4] xyxy pixels, labels int64 Tensor[M] in 1..C,
    image_id int, iscrowd bool Tensor[M], difficult bool Tensor[M] (an annotation's optional
    `"difficult": 1`, as VOC data converted by tools/convert.py carries it: ignored for
    training like crowd boxes; COCOeval counts it as ordinary ground truth), orig_size (h, w).
    Images without annotations are kept (they train as background).

    Args:
        img_dir: directory the ``file_name`` entries are relative to.
        ann_file: COCO-format JSON.
        transforms: ``(image HxWx3 uint8, target, rng) -> (image, target)``, see
            `rfcn.data.transforms`.
    """

    def __init__(
        self,
        img_dir: str | os.PathLike[str],
        ann_file: str | os.PathLike[str],
        transforms: Transform | None = None,
    ) -> None:
        self.img_dir = os.fspath(img_dir)
        self.ann_file = os.fspath(ann_file)
        self.transforms = transforms
        data = load_coco_json(self.ann_file)
        bad = BadRecordCounter()
        cats = self._categories(data)
        images, dropped_images = _valid_images(data, bad)
        per_image, clean_anns = self._clean_annotations(data, images, dropped_images, bad)
        self._records: list[ImageRecord] = [
            self._record(images[i], per_image[i]) for i in sorted(images)
        ]
        self.image_ids: list[int] = [r.image_id for r in self._records]
        self.aspect_ratios: list[float] = [r.width / r.height for r in self._records]
        self.coco = _coco_index(data, [images[i] for i in sorted(images)], clean_anns, cats)
        bad.warn(logger, self.ann_file)
        self.num_bad_records = bad.total()
        self.bad_records: dict[str, int] = dict(bad.counts)

    def _categories(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Categories by id; sets the label mappings and class names."""
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_id_to_label: dict[int, int] = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.label_to_cat_id: dict[int, int] = {v: k for k, v in self.cat_id_to_label.items()}
        self.class_names: list[str] = ["__background__"] + [str(c["name"]) for c in cats]
        return cats

    def _clean_annotations(
        self,
        data: dict[str, Any],
        images: dict[int, dict[str, Any]],
        dropped_images: set[int],
        bad: BadRecordCounter,
    ) -> tuple[dict[int, list[_Box]], list[dict[str, Any]]]:
        """(image id -> its training boxes, the cleaned annotations for COCOeval)."""
        per_image: dict[int, list[_Box]] = {i: [] for i in images}
        clean_anns: list[dict[str, Any]] = []
        for ann in data["annotations"]:
            box = self._clean_box(ann, images, dropped_images, bad)
            if box is None:
                continue
            crowd = bool(ann.get("iscrowd", 0))
            difficult = bool(ann.get("difficult", 0))  # VOC's flag, kept by tools/convert.py
            per_image[ann["image_id"]].append((box, self.cat_id_to_label[ann["category_id"]],
                                               crowd, difficult))
            clean_anns.append(_eval_annotation(ann, box, crowd))
        _renumber_annotations(clean_anns, bad)
        return per_image, clean_anns

    def _clean_box(
        self,
        ann: dict[str, Any],
        images: dict[int, dict[str, Any]],
        dropped_images: set[int],
        bad: BadRecordCounter,
    ) -> tuple[float, float, float, float] | None:
        """The annotation's xyxy box, or None (counted in `bad`) when it must be dropped."""
        image_id, cat_id = ann["image_id"], ann["category_id"]
        if image_id in dropped_images:
            bad.add("annotations of dropped images dropped")
            return None
        img = images.get(image_id) if isinstance(image_id, int) else None
        if img is None:
            bad.add("annotations with unknown image_id dropped")
            return None
        if not isinstance(cat_id, int) or cat_id not in self.cat_id_to_label:
            bad.add("annotations with unknown category_id dropped")
            return None
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            bad.add("annotations with a malformed bbox (not 4 numbers) dropped")
            return None
        x, y, w, h = (float(v) for v in bbox)
        return clean_box(x, y, x + w, y + h, int(img["width"]), int(img["height"]), bad)

    def _record(self, img: dict[str, Any], anns: list[_Box]) -> ImageRecord:
        return ImageRecord(
            path=os.path.join(self.img_dir, img["file_name"]),
            image_id=img["id"],
            height=int(img["height"]),
            width=int(img["width"]),
            boxes=np.array([a[0] for a in anns], dtype=np.float32).reshape(-1, 4),
            labels=np.array([a[1] for a in anns], dtype=np.int64),
            iscrowd=np.array([a[2] for a in anns], dtype=bool),
            difficult=np.array([a[3] for a in anns], dtype=bool),
        )

    def __repr__(self) -> str:
        return (f"CocoDetection(ann_file={self.ann_file!r}, images={len(self)}, "
                f"classes={len(self.class_names) - 1})")


# xyxy box, label, crowd, difficult
_Box = tuple[tuple[float, float, float, float], int, bool, bool]


def _valid_images(
    data: dict[str, Any], bad: BadRecordCounter
) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """(id -> image entry with a valid size, ids of the images dropped for their size)."""
    images: dict[int, dict[str, Any]] = {}
    dropped: set[int] = set()
    for img in data["images"]:
        if _valid_size(img):
            images[img["id"]] = img
        else:
            dropped.add(img["id"])
            bad.add("images with missing or invalid width/height dropped")
    return images, dropped


def _eval_annotation(
    ann: dict[str, Any], box: tuple[float, float, float, float], crowd: bool
) -> dict[str, Any]:
    """The evaluation ground truth gets the same cleaning as training, plus the fields
    COCOeval needs (area, iscrowd) when a custom file lacks them."""
    new_bbox = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    fixed = dict(ann)
    if new_bbox != [float(v) for v in ann["bbox"]]:
        fixed["bbox"] = new_bbox
    if not _is_number(fixed.get("area")):
        fixed["area"] = new_bbox[2] * new_bbox[3]
    fixed["iscrowd"] = int(crowd)
    return fixed


def _renumber_annotations(anns: list[dict[str, Any]], bad: BadRecordCounter) -> None:
    """Give annotations with a missing, non-integer or duplicate id a fresh one (COCOeval
    indexes by id)."""
    used: set[int] = set()
    renumber: list[dict[str, Any]] = []
    for ann in anns:
        aid = ann.get("id")
        if aid is None or aid in used or not isinstance(aid, int):
            renumber.append(ann)
        else:
            used.add(aid)
    if renumber:
        bad.add("annotations with a missing or duplicate id renumbered", len(renumber))
    next_id = max(used, default=0) + 1
    for ann in renumber:
        ann["id"] = next_id
        next_id += 1


def _coco_index(
    data: dict[str, Any],
    images: list[dict[str, Any]],
    anns: list[dict[str, Any]],
    cats: list[dict[str, Any]],
) -> COCO:
    """A pycocotools COCO over the cleaned records, ready for COCOeval."""
    clean = {k: v for k, v in data.items() if k not in _TOP_KEYS}
    clean.update(images=images, annotations=anns, categories=cats)
    coco = COCO()
    coco.dataset = clean
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco
