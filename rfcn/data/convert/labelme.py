"""Read labelme JSON annotations for conversion to COCO JSON.

The input is a folder of labelme ``*.json`` files (searched recursively, symlinks followed).
The image of ``x.json`` is, in this order: the one under ``img_dir`` when given, else
``imagePath`` relative to the JSON file (Windows separators accepted), else its base name or
``x.<image extension>`` beside the JSON; else the image embedded as base64 ``imageData``
(labelme's default), decoded and written to ``output/images/<the JSON's path>.<ext>``; else
the closest image named like it under the input (see `rfcn.data.convert.locate`).

Only ``shape_type: "rectangle"`` shapes are boxes: their two points, in any order, are opposite
corners in continuous pixels. Other shapes (polygon, circle, line, point, ...) are dropped and
reported, as OpenMMLab's ``labelme2coco`` does ("not support `polygon` yet, skip"): a polygon is
not a box the annotator drew. To train on polygons' bounding boxes, convert with labelme's own
``labelme2coco`` (it writes them).

Every image is decoded: one that does not is skipped, and the decoded size wins over
``imageHeight``/``imageWidth`` (the points were drawn on it), reported when they differ.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
from numbers import Real
from pathlib import Path
from typing import Any

from rfcn.data.convert.decoding import PendingImage, SizeWording, finish_images
from rfcn.data.convert.locate import ImageFinder
from rfcn.data.convert.report import DROPPED, IMAGE_NOT_FOUND, SKIPPED, ConversionReport
from rfcn.data.convert.sources import (
    IMAGE_EXTENSIONS,
    ReadOptions,
    Source,
    SourceObject,
    annotation_files,
    display_path,
    find_image,
)

__all__ = ["EMBEDDED_DIR", "read_labelme"]

logger = logging.getLogger(__name__)

EMBEDDED_DIR = "images"  # under the output folder: images decoded from imageData
_WORDING = SizeWording(
    missing="no valid imageHeight/imageWidth: size read from the image",
    mismatch="imageHeight/imageWidth differ from the image: image's used")
_MAGIC = ((b"\xff\xd8", ".jpg"), (b"\x89PNG", ".png"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
          (b"MM\x00*", ".tif"), (b"RIFF", ".webp"))


def read_labelme(input: Path, report: ConversionReport, options: ReadOptions) -> Source:
    """Every readable labelme JSON under ``input`` whose image decodes.

    Raises:
        ValueError: ``input`` is not a directory or holds no ``.json`` file.
    """
    json_files = annotation_files(input, ".json", "a folder of labelme .json files",
                                  options.output)
    finder = ImageFinder(input, options.img_dir, options.output)
    pending = [p for f in json_files
               if (p := _read_json(f, input, report, finder, options)) is not None]
    embedded = sum(_is_embedded(p.path, options) for p in pending)
    if embedded:
        logger.info("%d images decoded from imageData into %s", embedded,
                    options.output / EMBEDDED_DIR)
    images = finish_images(pending, report, options, _WORDING)
    root = options.img_dir if options.img_dir is not None else input
    if embedded and embedded == len(pending):
        root = options.output / EMBEDDED_DIR
    return Source(splits={"all": images}, img_root=str(root))


def _is_embedded(path: str, options: ReadOptions) -> bool:
    return Path(path).parent.is_relative_to(options.output / EMBEDDED_DIR)


def _positive_int(v: Any) -> int | None:
    ok = isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
    return int(v) if ok and v > 0 and int(v) == v else None


def _write_embedded(data: str, json_file: Path, input: Path, hint: str | None,
                    output: Path) -> Path | None:
    """``imageData`` written as an image file under ``output/images``; None when malformed."""
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None
    if not raw:
        return None
    ext = next((e for magic, e in _MAGIC if raw.startswith(magic)), None)
    if ext is None:
        named = Path((hint or "").replace("\\", "/")).suffix.lower()
        ext = named if named in IMAGE_EXTENSIONS else ".png"
    rel = Path(display_path(json_file, input))
    dest = output / EMBEDDED_DIR / (rel if not rel.is_absolute() else Path(rel.name))
    dest = Path(os.path.abspath(dest.with_suffix(ext)))
    if not (dest.is_file() and dest.read_bytes() == raw):  # a rerun rewrites nothing
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, dest)
    return dest


def _image_of(json_file: Path, data: dict[str, Any], input: Path, shown: str,
              report: ConversionReport, finder: ImageFinder,
              options: ReadOptions) -> Path | None:
    hint = data.get("imagePath") if isinstance(data.get("imagePath"), str) else None
    if finder.img_dir is not None:
        match = finder.find(json_file, hint)
        if match is not None:
            return match.path
    else:
        beside = find_image(json_file.parent, json_file.stem, hint)
        if beside is not None:
            return beside
    if isinstance(data.get("imageData"), str) and data["imageData"]:
        written = _write_embedded(data["imageData"], json_file, input, hint, options.output)
        if written is not None:
            return written
        report.add(shown, SKIPPED, "malformed imageData (not base64)")
        return None
    match = finder.find(json_file, hint) if finder.img_dir is None else None
    if match is None:
        report.add(shown, SKIPPED, IMAGE_NOT_FOUND,
                   f"imagePath {hint!r}: no such image {finder.where()}, and no imageData")
        return None
    return match.path


def _read_json(json_file: Path, input: Path, report: ConversionReport, finder: ImageFinder,
               options: ReadOptions) -> PendingImage | None:
    shown = display_path(json_file, input)
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        report.add(shown, SKIPPED, "unreadable or malformed JSON", str(e))
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        report.add(shown, SKIPPED, "not a labelme file (no 'shapes' list)")
        return None
    image = _image_of(json_file, data, input, shown, report, finder, options)
    if image is None:
        return None
    jh, jw = _positive_int(data.get("imageHeight")), _positive_int(data.get("imageWidth"))
    objects, entries = [], []
    for k, shape in enumerate(data["shapes"], 1):
        parsed = _shape(shape, k)
        if isinstance(parsed, tuple):
            entries.append((DROPPED, *parsed))
        else:
            objects.append(parsed)
    root = options.img_dir if options.img_dir is not None else input
    return PendingImage(path=str(image), source=shown, image_shown=display_path(image, root),
                        annotated_hw=(jh, jw) if jh and jw else None, objects=tuple(objects),
                        entries=tuple(entries))


def _point(p: Any) -> tuple[float, float] | None:
    if (isinstance(p, list | tuple) and len(p) == 2
            and all(isinstance(v, Real) and not isinstance(v, bool) for v in p)):
        return float(p[0]), float(p[1])
    return None


def _shape(shape: Any, k: int) -> SourceObject | tuple[str, str]:
    """The rectangle as a box, or (reason, detail) for dropping the shape."""
    if not isinstance(shape, dict):
        return "malformed shape (not an object)", f"shape {k}"
    name = str(shape.get("label") or "").strip()
    detail = f"shape {k} '{name}'"
    if not name:
        return "shape without a label", f"shape {k}"
    shape_type = shape.get("shape_type") or "polygon"  # labelme's default
    if shape_type != "rectangle":
        return "not a rectangle shape", f"{detail} shape_type {shape_type!r}"
    points = shape.get("points")
    corners = [_point(p) for p in points] if isinstance(points, list) else []
    if len(corners) != 2 or None in corners:
        return "malformed rectangle (expected two [x, y] points)", detail
    (xa, ya), (xb, yb) = corners  # type: ignore[misc]
    return SourceObject(name=name, box=(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)),
                        detail=detail)
