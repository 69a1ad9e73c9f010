"""Write reader records as COCO JSON: classes, box checks, the seeded split, the files.

Boxes are checked by the rules rfcn's COCO reader applies (`rfcn.data.records.clean_box`), so a
converted file loads with no bad record: non-finite and empty boxes are dropped, boxes
reaching outside the image are clipped to it (dropped when nothing is left), and every such
box is a report entry. Image ids are 1..N in ``file_name`` order, category ids 1..C in class
order, annotation ids 1..M; the output is the same for the same input and seed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rfcn.data.convert.report import CLIPPED, DROPPED, ConversionReport, SplitSummary
from rfcn.data.convert.sources import Source, SourceImage, SourceObject

__all__ = ["REPORT_FILE", "check_box", "image_root", "resolve_classes", "split_ids", "write_coco",
           "write_report"]

logger = logging.getLogger(__name__)

REPORT_FILE = "convert_report.json"
_ALL = "all"  # split name of a source without splits; written as annotations.json


def resolve_classes(classes: Sequence[str] | None, source: Source, input: str) -> list[str]:
    """The category names, in id order: as given, else as the format defines them, else every
    class name of a box read from the files, sorted.

    Raises:
        ValueError: the list is empty or has duplicates.
    """
    if classes is not None:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"classes must be distinct, got {names}")
    elif source.classes is not None:
        names = list(dict.fromkeys(source.classes))  # YOLO names may repeat
    else:
        names = sorted({o.name for imgs in source.splits.values() for i in imgs
                        for o in i.objects})
    if not names:
        raise ValueError(f"{input}: no class names (no box was read); pass classes=[...]")
    return names


def check_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """(the box, clipped to the image, or None when dropped; the reason when changed)."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return None, "non-finite coordinates"
    if x2 <= x1 or y2 <= y1:
        return None, "zero or negative size"
    clipped = (min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height)),
               min(max(x2, 0.0), float(width)), min(max(y2, 0.0), float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, "entirely outside the image"
    if clipped != (x1, y1, x2, y2):
        return clipped, "reaching outside the image"
    return clipped, None


def split_ids(ids: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train ids, val ids) by a seeded shuffle; ``round(val_fraction * N)`` images, at least one
    and at most N - 1, go to val.

    Raises:
        ValueError: fewer than two images.
    """
    n = len(ids)
    if n < 2:
        raise ValueError(f"cannot split {n} image(s) into train and val; use val_fraction=0")
    n_val = min(max(round(val_fraction * n), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(ids[int(i)] for i in order[:n_val])
    train = sorted(ids[int(i)] for i in order[n_val:])
    return train, val


def image_root(paths: Sequence[str], preferred: str) -> str:
    """``preferred`` when every image is under it, else the common parent of all of them."""
    preferred = os.path.abspath(preferred)
    dirs = sorted({os.path.dirname(p) for p in paths})
    try:
        if all(os.path.commonpath([d, preferred]) == preferred for d in dirs):
            return preferred
        return os.path.commonpath([preferred, *dirs])
    except ValueError:  # different drives: no relative file_name is possible
        raise ValueError(f"images lie on different drives than {preferred}") from None


def _annotation(obj: SourceObject, box: tuple[float, float, float, float], cat_id: int,
                image_id: int) -> dict[str, Any]:
    x1, y1, x2, y2 = box
    ann: dict[str, Any] = {"image_id": image_id, "category_id": cat_id,
                           "bbox": [x1, y1, x2 - x1, y2 - y1],
                           "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
    if obj.difficult:
        ann["difficult"] = 1  # VOC's flag; COCO readers ignore the extra key
    return ann


def _coco_records(
    images: list[SourceImage], cat_of: dict[str, int], report: ConversionReport, img_dir: str
) -> tuple[dict[str, dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """(image path -> COCO image entry, image id -> its annotations), boxes checked."""
    by_path: dict[str, SourceImage] = {}
    for img in images:  # an image listed in two splits is one image
        by_path.setdefault(img.path, img)
    names = {p: Path(os.path.relpath(p, img_dir)).as_posix() for p in by_path}
    entries: dict[str, dict[str, Any]] = {}
    anns: dict[int, list[dict[str, Any]]] = {}
    for image_id, path in enumerate(sorted(by_path, key=lambda p: names[p]), 1):
        img = by_path[path]
        entries[path] = {"id": image_id, "file_name": names[path], "width": img.width,
                         "height": img.height}
        anns[image_id] = []
        for obj in img.objects:
            if obj.name not in cat_of:
                report.add(img.source, DROPPED, "unknown class", obj.detail)
                continue
            box, reason = check_box(obj.box, img.width, img.height)
            if reason is not None:
                report.add(img.source, DROPPED if box is None else CLIPPED, reason, obj.detail)
            if box is not None:
                anns[image_id].append(_annotation(obj, box, cat_of[obj.name], image_id))
    next_id = 1
    for image_id in sorted(anns):
        for ann in anns[image_id]:
            ann["id"] = next_id
            next_id += 1
    return entries, anns


def _splits(source: Source, val_fraction: float, seed: int,
            entries: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Split name -> sorted image ids."""
    ids = {name: sorted({entries[i.path]["id"] for i in imgs})
           for name, imgs in source.splits.items() if imgs}
    for name, imgs in source.splits.items():
        if not imgs:
            logger.warning("split %r has no usable image; not written", name)
    if _ALL in ids and val_fraction > 0:
        ids["train"], ids["val"] = split_ids(ids.pop(_ALL), val_fraction, seed)
    elif val_fraction > 0:
        logger.warning("val_fraction=%s ignored: the source defines its splits (%s)",
                       val_fraction, ", ".join(ids))
    return ids


def write_coco(
    source: Source,
    classes: list[str],
    output: Path,
    val_fraction: float,
    seed: int,
    report: ConversionReport,
) -> None:
    """Write ``annotations.json`` (no split) or one ``<split>.json`` per split, and
    ``convert_report.json``, into ``output``; fill ``report``."""
    images = [i for imgs in source.splits.values() for i in imgs]
    img_dir = image_root([i.path for i in images], source.img_root)
    cat_of = {name: k for k, name in enumerate(classes, 1)}
    entries, anns = _coco_records(images, cat_of, report, img_dir)
    ids = _splits(source, val_fraction, seed, entries)
    by_id = {e["id"]: e for e in entries.values()}
    categories = [{"id": k, "name": name, "supercategory": ""} for name, k in cat_of.items()]
    report.img_dir, report.classes = img_dir, list(classes)
    output.mkdir(parents=True, exist_ok=True)
    for name, split_ids_ in ids.items():
        split_anns = [a for i in split_ids_ for a in anns[i]]
        path = output / ("annotations.json" if name == _ALL else f"{name}.json")
        write_json(path, {"images": [by_id[i] for i in split_ids_],
                          "annotations": split_anns, "categories": categories})
        report.splits[name] = SplitSummary(str(path), len(split_ids_), len(split_anns))
    write_report(report, output)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as JSON to `path` through a temporary file (a killed convert leaves no half
    file); NaN is refused (JSON has none). (rfcn.utils.files sits above the data layer.)"""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def write_report(report: ConversionReport, output: Path) -> None:
    """``output/convert_report.json``."""
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / REPORT_FILE, report.to_dict())
