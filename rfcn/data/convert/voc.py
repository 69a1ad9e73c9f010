"""Read VOC-XML annotations (any class names) for conversion to COCO JSON.

The input is a VOC-layout directory (``Annotations/`` + ``JPEGImages/``), a VOCdevkit holding
several of them, or any folder of ``.xml`` files next to their images (searched recursively).
The image of ``Annotations/x.xml`` is looked up in the sibling ``JPEGImages/``, that of any
other ``x.xml`` in its own folder: ``x.jpg``, else the ``<filename>`` the XML names, else
``x.<image extension>``. ``ImageSets/`` lists are not read: every annotated image is converted.

Devkit boxes are 1-based inclusive pixel indices; as in `rfcn.data.voc` they become continuous
``(xmin - 1, ymin - 1, xmax, ymax)``, i.e. COCO ``[xmin - 1, ymin - 1, xmax - xmin + 1,
ymax - ymin + 1]``. ``<size>`` is trusted (images are only decoded when it is missing or
invalid). ``difficult`` objects are kept and flagged ``"difficult": 1``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

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

__all__ = ["read_voc"]

_COORDS = ("xmin", "ymin", "xmax", "ymax")


def read_voc(input: Path, report: ConversionReport, exclude: Path | None = None) -> Source:
    """Every readable XML annotation under ``input`` whose image exists.

    Raises:
        ValueError: ``input`` is not a directory or holds no ``.xml`` file.
    """
    xml_files = annotation_files(input, ".xml", "a VOC folder: Annotations/ and JPEGImages/, "
                                 "or .xml files next to their images", exclude)
    images = [img for f in xml_files
              if (img := _read_xml(f, display_path(f, input), report)) is not None]
    return Source(splits={"all": images}, img_root=str(input.resolve()))


def _image_dir(xml_file: Path) -> Path:
    jpeg = xml_file.parent.parent / "JPEGImages"
    if xml_file.parent.name == "Annotations" and jpeg.is_dir():
        return jpeg
    return xml_file.parent


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


def _read_xml(xml_file: Path, shown: str, report: ConversionReport) -> SourceImage | None:
    try:
        tree = ET.parse(xml_file).getroot()
    except (OSError, ET.ParseError) as e:
        report.add(shown, SKIPPED, "unreadable or malformed XML", str(e))
        return None
    if tree.tag != "annotation":
        report.add(shown, SKIPPED, "not a VOC annotation", f"root element <{tree.tag}>")
        return None
    image_dir = _image_dir(xml_file)
    jpg = image_dir / f"{xml_file.stem}.jpg"  # first, as rfcn.data.voc looks it up
    image = jpg.resolve() if jpg.is_file() else find_image(image_dir, xml_file.stem,
                                                           tree.findtext("filename"))
    if image is None:
        report.add(shown, SKIPPED, "image file not found",
                   f"no {xml_file.stem}.jpg or <filename> in {image_dir}")
        return None
    size = _size(tree)
    if size is None:
        try:
            size = image_size(image)
        except ValueError as e:
            report.add(shown, SKIPPED, "no valid <size> and unreadable image", str(e))
            return None
        report.add(shown, CORRECTED, "no valid <size>: size read from the image",
                   f"(h, w) = {size}")
    objects = []
    for k, obj in enumerate(tree.iter("object"), 1):
        parsed = _object(obj, k)
        if isinstance(parsed, str):
            report.add(shown, DROPPED, parsed, f"object {k}")
        else:
            objects.append(parsed)
    return SourceImage(path=str(image), source=shown, height=size[0], width=size[1],
                       objects=tuple(objects))


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
