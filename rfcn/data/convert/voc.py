"""Read VOC-XML annotations (any class names) for conversion to COCO JSON.

The input is any folder holding ``.xml`` files (searched recursively, symlinks followed), as
labelling tools leave them: a VOC devkit (``Annotations/`` + ``JPEGImages/``, one year or
several), labelImg's ``annots/`` beside ``images/``, CVAT's VOC export, Roboflow's XML beside
the images, or the XML and images mixed anywhere. The image of ``x.xml`` is the closest image
named ``x.*`` or the ``<filename>`` it gives, under the input (or only under ``img_dir`` when
given; see `rfcn.data.convert.locate`); the ``<path>`` labelImg records is a last resort.
``ImageSets/`` lists are not read: every annotated image is converted.

Devkit boxes are 1-based inclusive pixel indices; as in `rfcn.data.voc` they become continuous
``(xmin - 1, ymin - 1, xmax, ymax)``, i.e. COCO ``[xmin - 1, ymin - 1, xmax - xmin + 1,
ymax - ymin + 1]``. Every image is decoded: one that does not is skipped, and the decoded size
wins over ``<size>`` (reported when they differ). ``difficult`` objects are kept and flagged
``"difficult": 1``.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from rfcn.data.convert.decoding import PendingImage, SizeWording, finish_images
from rfcn.data.convert.locate import ImageFinder
from rfcn.data.convert.report import DROPPED, IMAGE_NOT_FOUND, NOTE, SKIPPED, ConversionReport
from rfcn.data.convert.sources import (
    IMAGE_EXTENSIONS,
    ReadOptions,
    Source,
    SourceObject,
    annotation_files,
    display_path,
)

__all__ = ["read_voc"]

_COORDS = ("xmin", "ymin", "xmax", "ymax")
_WORDING = SizeWording(missing="no valid <size>: size read from the image",
                       mismatch="<size> differs from the image: image's used")


def read_voc(input: Path, report: ConversionReport, options: ReadOptions) -> Source:
    """Every readable XML annotation under ``input`` whose image decodes.

    Raises:
        ValueError: ``input`` is not a directory or holds no ``.xml`` file.
    """
    xml_files = annotation_files(input, ".xml", "a VOC folder: Annotations/ and JPEGImages/, "
                                 "or .xml files near their images", options.output)
    finder = ImageFinder(input, options.img_dir, options.output)
    root = options.img_dir if options.img_dir is not None else input
    pending = [p for f in xml_files
               if (p := _read_xml(f, display_path(f, input), report, finder, root)) is not None]
    images = finish_images(pending, report, options, _WORDING)
    return Source(splits={"all": images}, img_root=str(root))


def _size(tree: ET.Element) -> tuple[int, int] | None:
    """(h, w) from ``<size>``, None when missing or not positive integers."""
    try:
        w = float((tree.findtext("size/width") or "").strip())
        h = float((tree.findtext("size/height") or "").strip())
    except ValueError:
        return None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0
            and w == int(w) and h == int(h)):
        return None
    return int(h), int(w)


def _recorded_path(tree: ET.Element) -> Path | None:
    """labelImg's ``<path>``: the image where it was labelled, when that still exists."""
    text = (tree.findtext("path") or "").strip()
    if not text or Path(text).suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    path = Path(os.path.expanduser(text))
    return Path(os.path.abspath(path)) if path.is_absolute() and path.is_file() else None


def _find(xml_file: Path, tree: ET.Element, shown: str, report: ConversionReport,
          finder: ImageFinder) -> Path | None:
    hint = (tree.findtext("filename") or "").strip() or None
    match = finder.find(xml_file, hint)
    if match is not None:
        if match.ties:
            report.add(shown, NOTE, "several images match: the closest used",
                       f"{match.path} and {match.ties} more")
        return match.path
    recorded = _recorded_path(tree) if finder.img_dir is None else None
    if recorded is None:
        named = f" or {hint}" if hint and Path(hint).stem != xml_file.stem else ""
        report.add(shown, SKIPPED, IMAGE_NOT_FOUND,
                   f"no image {xml_file.stem}.*{named} {finder.where()}")
    else:
        report.add(shown, NOTE, "image found only at the <path> it was labelled at",
                   str(recorded))
    return recorded


def _read_xml(xml_file: Path, shown: str, report: ConversionReport, finder: ImageFinder,
              root: Path) -> PendingImage | None:
    try:
        tree = ET.parse(xml_file).getroot()
    except (OSError, ET.ParseError) as e:
        report.add(shown, SKIPPED, "unreadable or malformed XML", str(e))
        return None
    if tree.tag != "annotation":
        report.add(shown, SKIPPED, "not a VOC annotation", f"root element <{tree.tag}>")
        return None
    image = _find(xml_file, tree, shown, report, finder)
    if image is None:
        return None
    objects, entries = [], []
    for k, obj in enumerate(tree.iter("object"), 1):
        parsed = _object(obj, k)
        if isinstance(parsed, str):
            entries.append((DROPPED, parsed, f"object {k}"))
        else:
            objects.append(parsed)
    return PendingImage(path=str(image), source=shown, image_shown=display_path(image, root),
                        annotated_hw=_size(tree), objects=tuple(objects),
                        entries=tuple(entries))


def _object(obj: ET.Element, k: int) -> SourceObject | str:
    """The object, or why it is not a box."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        return "object without a class name"
    bb = obj.find("bndbox")
    try:
        if bb is None:
            raise ValueError
        xmin, ymin, xmax, ymax = (float((bb.findtext(c) or "").strip()) for c in _COORDS)
    except ValueError:
        return "missing or malformed <bndbox>"
    difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
    return SourceObject(name=name, box=(xmin - 1.0, ymin - 1.0, xmax, ymax),
                        detail=f"object {k} '{name}'", difficult=difficult)
