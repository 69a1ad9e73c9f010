"""Read labelme JSON annotations for conversion to COCO JSON.

The input is a folder of labelme ``*.json`` files (searched recursively). ``imagePath`` is
relative to the JSON file (Windows separators accepted; else the base name, else the JSON's
stem with an image extension, next to the JSON). Only ``shape_type: "rectangle"`` shapes are
boxes: their two points, in any order, are opposite corners in continuous pixels. Other shapes
(polygon, circle, line, point, ...) are dropped and reported, as OpenMMLab's ``labelme2coco``
does ("not support `polygon` yet, skip"): a polygon is not a box the annotator drew. To train
on polygons' bounding boxes, convert with labelme's own ``labelme2coco`` (it writes them).

``imageHeight``/``imageWidth`` are checked against the image, which is decoded: the image's size
wins when they differ (the points were drawn on it), reported.
"""

from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path
from typing import Any

from rfcn.data.convert.report import CORRECTED, DROPPED, SKIPPED, ConversionReport
from rfcn.data.convert.sources import (
    Source,
    SourceImage,
    SourceObject,
    annotation_files,
    display_path,
    find_image,
    image_size,
)

__all__ = ["read_labelme"]


def read_labelme(input: Path, report: ConversionReport, exclude: Path | None = None) -> Source:
    """Every readable labelme JSON under ``input`` whose image is readable.

    Raises:
        ValueError: ``input`` is not a directory or holds no ``.json`` file.
    """
    json_files = annotation_files(input, ".json", "a folder of labelme .json files", exclude)
    images = [img for f in json_files
              if (img := _read_json(f, display_path(f, input), report)) is not None]
    return Source(splits={"all": images}, img_root=str(input.resolve()))


def _positive_int(v: Any) -> int | None:
    ok = isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
    return int(v) if ok and v > 0 and int(v) == v else None


def _read_json(json_file: Path, shown: str, report: ConversionReport) -> SourceImage | None:
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        report.add(shown, SKIPPED, "unreadable or malformed JSON", str(e))
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        report.add(shown, SKIPPED, "not a labelme file (no 'shapes' list)")
        return None
    hint = data.get("imagePath") if isinstance(data.get("imagePath"), str) else None
    image = find_image(json_file.parent, json_file.stem, hint)
    if image is None:
        report.add(shown, SKIPPED, "image file not found", f"imagePath {hint!r}")
        return None
    try:
        h, w = image_size(image)
    except ValueError as e:
        report.add(shown, SKIPPED, "unreadable image", str(e))
        return None
    jh, jw = _positive_int(data.get("imageHeight")), _positive_int(data.get("imageWidth"))
    if (jh, jw) != (h, w):
        report.add(shown, CORRECTED, "imageHeight/imageWidth differ from the image: image's used",
                   f"json (h, w) = ({data.get('imageHeight')}, {data.get('imageWidth')}), "
                   f"image ({h}, {w})")
    objects = []
    for k, shape in enumerate(data["shapes"], 1):
        parsed = _shape(shape, k)
        if isinstance(parsed, tuple):
            report.add(shown, DROPPED, *parsed)
        else:
            objects.append(parsed)
    return SourceImage(path=str(image), source=shown, height=h, width=w, objects=tuple(objects))


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
