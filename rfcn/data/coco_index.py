"""A COCO-format JSON parsed into compact columns: training records and evaluation ground truth.

The JSON is read with msgspec against a schema of the keys this reader uses, so that the
``segmentation`` of every object (polygons and RLE are most of a COCO file and the detector
never uses them) is skipped without building it: about twice as fast as ``json.load``
(COCO train2017's size: README). A file the schema does not fit (a key of the wrong type, a
non-standard NaN, invalid UTF-8, ...) is read again with ``json.load``, dropping each
``segmentation`` as soon as its object is parsed, so that messy files get the same cleaning
and the same messages as before. The
structure is validated (``ValueError`` naming the file and the problem), then every
annotation is cleaned once, giving

* the training records (`RecordTable`): images in ascending id order, their boxes in file
  order, xyxy float32, crowd and difficult flags;
* the evaluation ground truth (`EvalAnnotations`): the same annotations in file order with
  what COCOeval (``iouType="bbox"``) reads: id (missing or duplicate ids renumbered), image
  and category id, bbox xywh and area in float64 (the file's values, clipped boxes
  recomputed; a missing area is w*h), iscrowd.

`load_coco_index` caches the result (`rfcn.data.index_cache`), so a file is parsed once.

Shape shorthand: N images, M boxes kept (= A annotations for evaluation).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from numbers import Real
from typing import Any

import msgspec
import numpy as np

from rfcn.data.index_cache import cached_index
from rfcn.data.records import BadRecordCounter, RecordTable, clean_boxes

__all__ = ["CocoIndex", "EvalAnnotations", "load_coco_index", "load_coco_json", "parse_coco"]

# Bump when the cleaning rules or the columns change: caches of older versions are rebuilt.
READER = "coco@1"

_TOP_KEYS = ("images", "annotations", "categories")
_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANN_KEYS = ("image_id", "category_id", "bbox")
_CAT_KEYS = ("id", "name")


def _drop_segmentation(obj: dict[str, Any]) -> dict[str, Any]:
    obj.pop("segmentation", None)
    return obj


_UNSET: Any = msgspec.UNSET


class _Image(msgspec.Struct):  # every key of an image this reader reads (others skipped)
    id: Any = _UNSET
    file_name: Any = _UNSET
    width: Any = _UNSET
    height: Any = _UNSET


class _Annotation(msgspec.Struct):
    id: Any = _UNSET
    image_id: Any = _UNSET
    category_id: Any = _UNSET
    bbox: Any = _UNSET
    area: Any = _UNSET
    iscrowd: Any = _UNSET
    difficult: Any = _UNSET


class _CocoFile(msgspec.Struct):
    images: list[_Image] = _UNSET
    annotations: list[_Annotation] = _UNSET
    categories: list[dict[str, Any]] = _UNSET  # kept whole (few; supercategory etc.)


def _decode_fast(raw: bytes) -> dict[str, Any] | None:
    """The file as ``json.load`` would give it, less the keys this reader never reads (an
    absent key stays absent); None when the file does not fit the schema."""
    try:
        return msgspec.to_builtins(msgspec.json.decode(raw, type=_CocoFile))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def load_coco_json(ann_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a COCO-format JSON file (without segmentations) and check its structure.

    Raises:
        ValueError: naming the file and the problem (unreadable, invalid JSON, missing keys,
            wrong types, duplicate ids).
    """
    path = os.fspath(ann_file)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read annotation file ({e.strerror or e})") from e
    data = _decode_fast(raw)
    if data is None:
        try:
            data = json.loads(raw.decode("utf-8"), object_hook=_drop_segmentation)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from e
    del raw
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
    _check_ids(path, data)
    return data


def _check_ids(path: str, data: dict[str, Any]) -> None:
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


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _valid_size(img: dict[str, Any]) -> bool:
    w, h = img["width"], img["height"]
    return (_is_number(w) and _is_number(h) and math.isfinite(w) and math.isfinite(h)
            and int(w) == w and int(h) == h and w > 0 and h > 0)


@dataclass(frozen=True, eq=False)
class EvalAnnotations:
    """The evaluation ground truth, one row per kept annotation, in file order."""

    ids: np.ndarray  # int64 [A]
    image_ids: np.ndarray  # int64 [A]
    category_ids: np.ndarray  # int64 [A]
    bboxes: np.ndarray  # float64 [A, 4] xywh pixels
    areas: np.ndarray  # float64 [A]
    iscrowd: np.ndarray  # bool [A]

    def __len__(self) -> int:
        return len(self.ids)

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> EvalAnnotations:
        try:
            ev = cls(**{f.name: arrays[prefix + f.name] for f in fields(cls)})
        except KeyError as e:
            raise ValueError(f"evaluation column {e} missing") from None
        n = len(ev.ids)
        if ev.bboxes.shape != (n, 4) or any(
                getattr(ev, f.name).shape != (n,) for f in fields(cls) if f.name != "bboxes"):
            raise ValueError("evaluation columns of inconsistent lengths")
        return ev

    def to_dicts(self) -> list[dict[str, Any]]:
        """pycocotools annotation dicts (no segmentation)."""
        cols = (self.ids.tolist(), self.image_ids.tolist(), self.category_ids.tolist(),
                self.bboxes.tolist(), self.areas.tolist(), self.iscrowd.astype(np.int64).tolist())
        return [{"id": a, "image_id": i, "category_id": c, "bbox": b, "area": s, "iscrowd": k}
                for a, i, c, b, s, k in zip(*cols, strict=True)]


@dataclass(frozen=True, eq=False)
class CocoIndex:
    """A parsed COCO-format file: records, evaluation ground truth, categories (sorted by
    id, as in the file) and the bad records found, by reason."""

    records: RecordTable
    eval_annotations: EvalAnnotations
    categories: list[dict[str, Any]]
    bad_records: dict[str, int]

    def encode(self) -> dict[str, np.ndarray]:
        """As numpy arrays only (JSON text as uint8 for the small parts), for the cache."""
        meta = json.dumps({"categories": self.categories, "bad_records": self.bad_records})
        return {**self.records.arrays("rec_"), **self.eval_annotations.arrays("eval_"),
                "meta_json": np.frombuffer(meta.encode("utf-8"), dtype=np.uint8)}

    @classmethod
    def decode(cls, arrays: dict[str, np.ndarray]) -> CocoIndex:
        """Inverse of `encode`; ValueError when the arrays are damaged."""
        if "meta_json" not in arrays:
            raise ValueError("meta_json missing")
        meta = json.loads(arrays["meta_json"].tobytes().decode("utf-8"))
        records = RecordTable.from_arrays(arrays, "rec_")
        ev = EvalAnnotations.from_arrays(arrays, "eval_")
        if len(ev) != len(records.boxes):
            raise ValueError("evaluation and training annotations differ in number")
        return cls(records, ev, list(meta["categories"]), dict(meta["bad_records"]))


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


def _renumber(ids: list[Any], bad: BadRecordCounter) -> np.ndarray:
    """Annotation ids with missing, non-integer or duplicate ones replaced by fresh ids
    (COCOeval indexes by id) -> int64[A]."""
    used: set[int] = set()
    renumber: list[int] = []
    for k, aid in enumerate(ids):
        if aid is None or aid in used or not isinstance(aid, int):
            renumber.append(k)
        else:
            used.add(aid)
    if renumber:
        bad.add("annotations with a missing or duplicate id renumbered", len(renumber))
    out = list(ids)
    next_id = max(used, default=0) + 1
    for k in renumber:
        out[k] = next_id
        next_id += 1
    return np.array(out, dtype=np.int64).reshape(len(ids))


_NUMBER_TYPES = frozenset({int, float})  # what json.load gives for numbers (bool excluded)
_DROP_REASONS = ("annotations of dropped images dropped",
                 "annotations with unknown image_id dropped",
                 "annotations with unknown category_id dropped",
                 "annotations with a malformed bbox (not 4 numbers) dropped")


def _four_numbers(bbox: Any) -> bool:
    return (isinstance(bbox, list) and len(bbox) == 4
            and all(type(v) in _NUMBER_TYPES or _is_number(v) for v in bbox))


def _bbox_array(bboxes: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(float64[A, 4] xywh, bool[A] well-formed: a list of 4 numbers); malformed rows are 0."""
    fast = (all(type(b) is list and len(b) == 4 for b in bboxes)
            and {type(v) for b in bboxes for v in b} <= _NUMBER_TYPES)
    if fast:  # the common case, checked without a Python call per box
        return (np.array(bboxes, dtype=np.float64).reshape(-1, 4),
                np.ones(len(bboxes), dtype=bool))
    ok = [_four_numbers(b) for b in bboxes]
    rows = [b if good else [0, 0, 0, 0] for b, good in zip(bboxes, ok, strict=True)]
    return np.array(rows, dtype=np.float64).reshape(-1, 4), np.array(ok, dtype=bool)


@dataclass(frozen=True, eq=False)
class _Checked:
    """The annotations whose image, category and bbox are valid, in file order."""

    index: np.ndarray  # int64 [V] position in the file's annotation list
    owner: np.ndarray  # int64 [V] image index (ascending image id)
    label: np.ndarray  # int64 [V]
    xywh: np.ndarray  # float64 [V, 4]
    crowd: np.ndarray  # bool [V]
    difficult: np.ndarray  # bool [V]
    ids: list[Any]  # [V] as in the file (None where missing)
    areas: list[Any]  # [V] as in the file (None where missing)


def _check_annotations(
    anns: list[dict[str, Any]], position: dict[int, int], dropped: set[int],
    cat_id_to_label: dict[int, int], bad: BadRecordCounter,
) -> _Checked:
    """Drop (and count, first failing check only) annotations of dropped or unknown images,
    of unknown categories and with malformed bboxes: columns of what is left."""
    image_ids = [a["image_id"] for a in anns]
    cat_ids = [a["category_id"] for a in anns]
    is_dropped = np.array([i in dropped for i in image_ids] if dropped else [False] * len(anns),
                          dtype=bool).reshape(-1)
    owner = np.array([position.get(i, -1) if isinstance(i, int) else -1 for i in image_ids],
                     dtype=np.int64).reshape(-1)
    label = np.array([cat_id_to_label.get(c, 0) if isinstance(c, int) else 0 for c in cat_ids],
                     dtype=np.int64).reshape(-1)
    xywh, well_formed = _bbox_array([a["bbox"] for a in anns])
    remaining = np.ones(len(anns), dtype=bool)
    for reason, fails in zip(_DROP_REASONS, (is_dropped, owner < 0, label == 0, ~well_formed),
                             strict=True):
        n = int((remaining & fails).sum())
        if n:
            bad.add(reason, n)
        remaining &= ~fails
    index = np.flatnonzero(remaining)
    kept = [anns[k] for k in index.tolist()]
    return _Checked(
        index=index, owner=owner[index], label=label[index], xywh=xywh[index],
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in kept], dtype=bool).reshape(-1),
        # VOC's flag, kept by tools/convert.py
        difficult=np.array([bool(a.get("difficult", 0)) for a in kept], dtype=bool).reshape(-1),
        ids=[a.get("id") for a in kept],
        areas=[a.get("area") for a in kept])


def parse_coco(ann_file: str | os.PathLike[str]) -> CocoIndex:
    """Parse and clean a COCO-format JSON (no cache); see the module docstring."""
    data = load_coco_json(ann_file)
    bad = BadRecordCounter()
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_id_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
    images, dropped = _valid_images(data, bad)
    order = sorted(images)
    position = {image_id: k for k, image_id in enumerate(order)}
    checked = _check_annotations(data["annotations"], position, dropped, cat_id_to_label, bad)
    del data  # the parsed JSON is no longer needed (``images`` keeps its image entries)
    heights = np.array([int(images[i]["height"]) for i in order], dtype=np.int64)
    widths = np.array([int(images[i]["width"]) for i in order], dtype=np.int64)
    xywh, owner = checked.xywh, checked.owner
    with np.errstate(over="ignore", invalid="ignore"):
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    keep, boxes = clean_boxes(xyxy, widths[owner], heights[owner], bad)
    kept = np.flatnonzero(keep)
    records = RecordTable.build(
        names=[images[i]["file_name"] for i in order], image_ids=order, heights=heights,
        widths=widths, owner=owner[kept], boxes=boxes[kept], labels=checked.label[kept],
        iscrowd=checked.crowd[kept], difficult=checked.difficult[kept])
    cat_ids = np.array([c["id"] for c in cats], dtype=np.int64)
    ev = _eval_annotations(checked, kept, boxes[kept], records.image_ids, cat_ids, bad)
    return CocoIndex(records, ev, cats, dict(bad.counts))


def _eval_annotations(checked: _Checked, kept: np.ndarray, boxes: np.ndarray,
                      image_ids: np.ndarray, cat_ids: np.ndarray,
                      bad: BadRecordCounter) -> EvalAnnotations:
    """The kept annotations (rows ``kept`` of ``checked``, cleaned xyxy ``boxes``) for
    COCOeval: bbox xywh of the cleaned box, the file's area (w*h where it has none)."""
    idx = kept.tolist()
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).reshape(-1, 4)
    area_given = [checked.areas[k] for k in idx]
    if {type(a) for a in area_given} <= _NUMBER_TYPES:  # every area a plain number
        areas = np.array(area_given, dtype=np.float64).reshape(-1)
    else:
        given = np.array([_is_number(a) for a in area_given], dtype=bool).reshape(-1)
        values = np.array([float(a) if ok else 0.0 for a, ok in zip(area_given, given,
                                                                    strict=True)])
        areas = np.where(given, values.reshape(-1), xywh[:, 2] * xywh[:, 3])
    return EvalAnnotations(
        ids=_renumber([checked.ids[k] for k in idx], bad),
        image_ids=image_ids[checked.owner[kept]],
        category_ids=cat_ids[checked.label[kept] - 1],
        bboxes=xywh, areas=areas, iscrowd=checked.crowd[kept])


def load_coco_index(
    ann_file: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> CocoIndex:
    """`parse_coco`, once per version of the file (cached in ``cache_dir``)."""
    return cached_index(ann_file, READER, lambda: parse_coco(ann_file), CocoIndex.encode,
                        CocoIndex.decode, cache_dir)
