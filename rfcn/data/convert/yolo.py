"""Read a YOLO (Ultralytics/Darknet txt) detection dataset for conversion to COCO JSON.

The input is a dataset YAML, or a folder holding one (``data.yaml`` or its only ``*.yaml``),
with the Ultralytics keys: ``path`` (dataset root; relative to the YAML's folder, default that
folder), ``train``, ``val``, optional ``test`` (each a folder of images, a ``.txt`` list of image
paths, or a list of those; relative to ``path``, else to the YAML's folder; the paths in a list
file relative to the list's folder, else to ``path``), and ``names`` (a list, or an ``{id: name}``
mapping; without it, ``nc`` gives names ``class_0``...). ``train`` and ``val`` become the
train/val split; with ``train`` only, all images form one set.

Labels follow the YOLO rule: the last ``/images/`` of the image path becomes ``/labels/`` and
the extension ``.txt``. Each line ``class cx cy w h`` is normalized to the image size, which is
read from the image; a line of more values is a segment (``class x1 y1 x2 y2 ...``) and becomes
its bounding box, as Ultralytics trains detection on it (reported). An image without a label
file is kept without boxes (background), as YOLO does (reported).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import yaml

from rfcn.data.convert.report import DROPPED, NOTE, SKIPPED, ConversionReport
from rfcn.data.convert.sources import (
    IMAGE_EXTENSIONS,
    Source,
    SourceImage,
    SourceObject,
    display_path,
    find_files,
    image_size,
)

__all__ = ["read_yolo", "yolo_label_path"]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")


def yolo_label_path(image: str | os.PathLike[str]) -> Path:
    """The label file of an image by the YOLO rule (``.../images/x.jpg -> .../labels/x.txt``)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    path = os.fspath(image)
    if sa in path:
        path = sb.join(path.rsplit(sa, 1))
    return Path(os.path.splitext(path)[0] + ".txt")


def _find_yaml(input: Path) -> Path:
    if input.is_file():
        return input
    if not input.is_dir():
        raise ValueError(f"{input}: no such file or directory (expected a YOLO data.yaml)")
    for name in ("data.yaml", "data.yml"):
        if (input / name).is_file():
            return input / name
    found = sorted([*input.glob("*.yaml"), *input.glob("*.yml")])
    if len(found) != 1:
        raise ValueError(f"{input}: expected data.yaml or exactly one .yaml file, found "
                         f"{[f.name for f in found]}")
    return found[0]


def _load_yaml(yaml_file: Path) -> dict[str, Any]:
    try:
        with open(yaml_file, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"{yaml_file}: cannot read ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{yaml_file}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{yaml_file}: expected a mapping with train/val/names keys")
    return data


def _names(data: dict[str, Any], yaml_file: Path) -> dict[int, str]:
    """YOLO class id -> name."""
    names = data.get("names")
    if names is None and isinstance(data.get("nc"), int):
        names = [f"class_{i}" for i in range(data["nc"])]
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}
        except (TypeError, ValueError):
            raise ValueError(f"{yaml_file}: 'names' keys must be integer class ids") from None
    raise ValueError(f"{yaml_file}: 'names' must be a list or an {{id: name}} mapping")


def _resolve(entry: str, bases: list[Path]) -> Path | None:
    p = Path(os.path.expanduser(entry))
    if p.is_absolute():
        return p if p.exists() else None
    for base in bases:
        if (base / p).exists():
            return (base / p).resolve()
    return None


def _split_images(entry: Any, root: Path, yaml_dir: Path, shown_yaml: str,
                  report: ConversionReport) -> list[Path]:
    """The image paths of one split entry (folder, list file, image, or a list of those)."""
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for e in entries:
        p = _resolve(str(e), [root, yaml_dir])
        if p is None:
            report.add(shown_yaml, SKIPPED, "split path not found", str(e))
        elif p.is_dir():
            images += find_files(p, IMAGE_EXTENSIONS)
        elif p.suffix.lower() == ".txt":
            images += _list_file(p, root, display_path(p, root), report)
        else:
            images.append(p)
    return list(dict.fromkeys(images))


def _list_file(list_file: Path, root: Path, shown: str, report: ConversionReport) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        report.add(shown, SKIPPED, "unreadable image list", str(e))
        return []
    images = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = _resolve(line, [list_file.parent, root])
        if p is None or not p.is_file():
            report.add(shown, SKIPPED, "image file not found", f"line {n}: {line}")
        else:
            images.append(p)
    return images


def read_yolo(input: Path, report: ConversionReport, exclude: Path | None = None) -> Source:
    """The images of every split of the dataset YAML, with their label boxes in pixels.

    Raises:
        ValueError: no YAML, unreadable YAML, no ``train`` or no usable ``names``.
    """
    del exclude  # images come from the YAML's lists, never from the output directory
    yaml_file = _find_yaml(input).resolve()
    data = _load_yaml(yaml_file)
    yaml_dir = yaml_file.parent
    names = _names(data, yaml_file)
    root = Path(os.path.expanduser(str(data.get("path") or ".")))
    root = (root if root.is_absolute() else yaml_dir / root).resolve()
    if not root.is_dir():
        logger.warning("%s: path %s is not a directory; paths are taken relative to %s",
                       yaml_file, root, yaml_dir)
        root = yaml_dir
    if not data.get("train"):
        raise ValueError(f"{yaml_file}: no 'train' entry")
    shown_yaml = yaml_file.name
    splits: dict[str, list[SourceImage]] = {}
    for key in _SPLITS:
        if data.get(key):
            paths = _split_images(data[key], root, yaml_dir, shown_yaml, report)
            splits[key] = [img for p in paths
                           if (img := _read_image(p, root, names, report)) is not None]
    if "val" not in splits:
        splits["all"] = splits.pop("train")
    return Source(splits=splits, img_root=str(root), classes=list(names.values()))


def _read_image(image: Path, root: Path, names: dict[int, str],
                report: ConversionReport) -> SourceImage | None:
    shown = display_path(image, root)
    try:
        h, w = image_size(image)
    except ValueError as e:
        report.add(shown, SKIPPED, "unreadable image", str(e))
        return None
    label_file = yolo_label_path(image)
    label_shown = display_path(label_file, root)
    if not label_file.is_file():
        report.add(shown, NOTE, "no label file: image kept without boxes", label_shown)
        return SourceImage(path=str(image), source=label_shown, height=h, width=w)
    try:
        lines = label_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        report.add(label_shown, SKIPPED, "unreadable label file", str(e))
        return None
    objects = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parsed = _label_line(line, n, h, w, names)
        if isinstance(parsed, str):
            report.add(label_shown, DROPPED, parsed, f"line {n}: {line.strip()[:60]}")
            continue
        obj, segment = parsed
        if segment:
            report.add(label_shown, NOTE, "segment converted to its bounding box", obj.detail)
        objects.append(obj)
    return SourceImage(path=str(image), source=label_shown, height=h, width=w,
                       objects=tuple(objects))


def _label_line(line: str, n: int, h: int, w: int,
                names: dict[int, str]) -> tuple[SourceObject, bool] | str:
    """(the box in pixels, whether it came from a segment), or why the line is not a box."""
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return "malformed label line (not numbers)"
    if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        return "malformed label line (expected 'class cx cy w h')"
    cls = values[0]
    if not (math.isfinite(cls) and cls == int(cls) and int(cls) in names):
        return "unknown class id"
    name = names[int(cls)]
    detail = f"line {n} '{name}'"
    if len(values) == 5:
        cx, cy, bw, bh = values[1:]
        box = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
        return SourceObject(name=name, box=box, detail=detail), False
    xs, ys = values[1::2], values[2::2]
    box = (min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h)
    if not all(map(math.isfinite, values)):  # min/max would hide a NaN
        box = (math.nan,) * 4
    return SourceObject(name=name, box=box, detail=detail), True
