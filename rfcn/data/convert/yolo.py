"""Read a YOLO (Ultralytics/Darknet txt) detection dataset for conversion to COCO JSON.

Where the images are and what the classes are called: `rfcn.data.convert.yolo_layout` (a
data.yaml, a CVAT/darknet ``obj.data``, or a plain folder). ``train`` and ``val`` become the
train/val split; with ``train`` only, all images form one set.

The label file of an image follows the YOLO rule (the last ``/images/`` of the image path
becomes ``/labels/``, the extension ``.txt``), else it is the ``.txt`` beside the image (CVAT,
labelImg), else (with ``img_dir``) the ``.txt`` of that stem under the input. Each line
``class cx cy w h`` is normalized to the image size, which is read from the decoded image
(every image is decoded; one that does not is skipped); a line of more values is a segment
(``class x1 y1 x2 y2 ...``) and becomes its bounding box, as Ultralytics trains detection on it
(reported). An image without a label file is kept without boxes (background), as YOLO does
(reported).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from rfcn.data.convert.decoding import decode_images, skip_reason
from rfcn.data.convert.report import DROPPED, NOTE, SKIPPED, ConversionReport
from rfcn.data.convert.sources import (
    ReadOptions,
    Source,
    SourceImage,
    SourceObject,
    display_path,
    find_files,
)
from rfcn.data.convert.yolo_layout import find_layout
from rfcn.data.image_check import ImageInfo

__all__ = ["read_yolo", "yolo_label_path"]

logger = logging.getLogger(__name__)

_Names = dict[int, str] | None  # None: any class id k is named class_<k>
NO_NAMES = ("no class names (data.yaml names, obj.names, classes.txt): classes named "
            "class_<id>; pass classes=[...] to name them")


def yolo_label_path(image: str | os.PathLike[str]) -> Path:
    """The label file of an image by the YOLO rule (``.../images/x.jpg -> .../labels/x.txt``)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    path = os.fspath(image)
    if sa in path:
        path = sb.join(path.rsplit(sa, 1))
    return Path(os.path.splitext(path)[0] + ".txt")


class _Labels:
    """Finds the label file of an image."""

    def __init__(self, input: Path, options: ReadOptions) -> None:
        self._by_stem: dict[str, Path] | None = None
        if options.img_dir is not None:
            self._by_stem = {}
            folder = input if input.is_dir() else input.parent  # input: the data.yaml
            for f in find_files(folder, (".txt",), options.output):
                self._by_stem.setdefault(f.stem, f)

    def of(self, image: Path) -> Path | None:
        for candidate in (yolo_label_path(image), image.with_suffix(".txt")):
            if candidate.is_file():
                return candidate
        return self._by_stem.get(image.stem) if self._by_stem is not None else None


def read_yolo(input: Path, report: ConversionReport, options: ReadOptions) -> Source:
    """The images of every split of the dataset, with their label boxes in pixels.

    Raises:
        ValueError: nothing YOLO-like at ``input``, unreadable YAML, no ``train`` or no usable
            ``names``.
    """
    layout = find_layout(input, report, options)
    names: _Names = layout.names
    if names is None and options.classes is not None:
        names = dict(enumerate(options.classes))
    infos = decode_images([str(p) for paths in layout.splits.values() for p in paths], options)
    labels = _Labels(input, options)
    seen: set[int] = set()
    splits = {key: [img for p in paths if (img := _read_image(
                  p, infos[str(p)], layout.root, labels, names, seen, report)) is not None]
              for key, paths in layout.splits.items()}
    if names is not None:
        classes = list(names.values())
    else:
        classes = [f"class_{k}" for k in range(max(seen) + 1)] if seen else []
        report.add(display_path(input, input.parent), NOTE, NO_NAMES)
    img_root = options.img_dir if options.img_dir is not None else layout.root
    return Source(splits=splits, img_root=str(img_root), classes=classes)


def _read_image(image: Path, info: ImageInfo, root: Path, labels: _Labels, names: _Names,
                seen: set[int], report: ConversionReport) -> SourceImage | None:
    shown = display_path(image, root)
    if info.size is None:
        assert info.problem is not None
        report.add(shown, SKIPPED, skip_reason(info.problem), info.problem.problem)
        return None
    h, w = info.size
    label_file = labels.of(image)
    if label_file is None:
        label_shown = display_path(yolo_label_path(image), root)
        report.add(shown, NOTE, "no label file: image kept without boxes", label_shown)
        return SourceImage(path=str(image), source=label_shown, height=h, width=w)
    label_shown = display_path(label_file, root)
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
        obj, segment, cls = parsed
        seen.add(cls)
        if segment:
            report.add(label_shown, NOTE, "segment converted to its bounding box", obj.detail)
        objects.append(obj)
    return SourceImage(path=str(image), source=label_shown, height=h, width=w,
                       objects=tuple(objects))


def _label_line(line: str, n: int, h: int, w: int,
                names: _Names) -> tuple[SourceObject, bool, int] | str:
    """(the box in pixels, whether it came from a segment, the class id), or why the line is
    not a box."""
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return "malformed label line (not numbers)"
    if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        return "malformed label line (expected 'class cx cy w h')"
    cls = values[0]
    if not (math.isfinite(cls) and cls == int(cls) and cls >= 0
            and (names is None or int(cls) in names)):
        return "unknown class id"
    name = names[int(cls)] if names is not None else f"class_{int(cls)}"
    detail = f"line {n} '{name}'"
    if len(values) == 5:
        cx, cy, bw, bh = values[1:]
        box = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
        return SourceObject(name=name, box=box, detail=detail), False, int(cls)
    xs, ys = values[1::2], values[2::2]
    box = (min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h)
    if not all(map(math.isfinite, values)):  # min/max would hide a NaN
        box = (math.nan,) * 4
    return SourceObject(name=name, box=box, detail=detail), True, int(cls)
