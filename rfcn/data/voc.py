"""PASCAL VOC and VOC-format custom data (VOCdevkit layout).

``root`` is the VOCdevkit directory (holding ``VOC2007/``, ``VOC2012/``) or directly a
directory with ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``. Boxes are 0-based
continuous xyxy ``(xmin - 1, ymin - 1, xmax, ymax)``, as detectron2 and py-faster-rcnn use.
``difficult`` objects stay in the target, flagged (the training loader drops them, VOC
evaluation ignores them). All XML is parsed at construction: malformed or missing files raise
``ValueError`` naming the file; objects of unknown classes or with bad boxes are dropped or
clipped, counted, and reported in one warning.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from rfcn.data.interfaces import Transform
from rfcn.data.records import BadRecordCounter, RecordDataset, RecordTable, clean_box

__all__ = ["VOC_CLASSES", "VOCDetection"]

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _text(node: ET.Element, path: str, xml_file: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise ValueError(f"{xml_file}: missing <{path}>")
    return found.text.strip()


def _positive_int(node: ET.Element, path: str, xml_file: str) -> int:
    text = _text(node, path, xml_file)
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{xml_file}: <{path}> is not a number: {text!r}") from None
    if value <= 0:
        raise ValueError(f"{xml_file}: <{path}> must be positive, got {value}")
    return value


def _numeric_ids(names: list[str]) -> list[int]:
    """VOC ids as ints ('000005' -> 5, '2008_000123' -> 2008000123) when that is unique,
    else positions."""
    if all(n.replace("_", "").isdigit() for n in names):
        ids = [int(n.replace("_", "")) for n in names]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(len(names)))


# (file name in JPEGImages/, height, width, [(xyxy box, label, difficult)])
_Parsed = tuple[str, int, int, list[tuple[tuple[float, float, float, float], int, bool]]]


def _table(parsed: list[_Parsed], image_ids: list[int]) -> RecordTable:
    """The compact records of the parsed images."""
    objects = [(k, *o) for k, p in enumerate(parsed) for o in p[3]]
    return RecordTable.build(
        names=[p[0] for p in parsed], image_ids=image_ids, heights=[p[1] for p in parsed],
        widths=[p[2] for p in parsed], owner=np.array([o[0] for o in objects], dtype=np.int64),
        boxes=np.array([o[1] for o in objects], dtype=np.float32).reshape(-1, 4),
        labels=np.array([o[2] for o in objects], dtype=np.int64),
        iscrowd=np.zeros(len(objects), dtype=bool),
        difficult=np.array([o[3] for o in objects], dtype=bool))


class VOCDetection(RecordDataset):
    """A VOC-format dataset: ``ds[i] -> (Tensor[3, H, W] float32 RGB in [0, 1], target)``.

    target: boxes float32 Tensor[M, 4] xyxy pixels, labels int64 Tensor[M] in 1..C,
    image_id int, difficult bool Tensor[M], iscrowd bool Tensor[M] (all False),
    orig_size (h, w).

    Args:
        root: VOCdevkit directory, or a directory in VOC layout.
        year: picks ``root/VOC{year}`` when it exists.
        image_set: name of the list in ``ImageSets/Main`` (train, val, trainval, test).
        class_names: None for the 20 VOC classes, or the classes of custom VOC-format data
            (without background; labels follow this order).
        transforms: ``(image HxWx3 uint8, target, rng) -> (image, target)``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        year: str = "2007",
        image_set: str = "trainval",
        class_names: Sequence[str] | None = None,
        transforms: Transform | None = None,
    ) -> None:
        root = os.fspath(root)
        candidate = os.path.join(root, f"VOC{year}")
        if os.path.isdir(candidate):
            self.root = candidate
        elif os.path.isdir(os.path.join(root, "Annotations")):
            self.root = root
        else:
            raise ValueError(f"{root}: neither VOC{year}/ nor Annotations/ found (expected the "
                             "VOCdevkit directory or a VOC-layout directory)")
        self.year = str(year)
        self.image_set = image_set
        self.transforms = transforms
        classes = list(VOC_CLASSES if class_names is None else class_names)
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"class_names must be non-empty and distinct, got {classes}")
        self.class_names: list[str] = ["__background__"] + classes
        self.cat_id_to_label: dict[int, int] = {k: k for k in range(1, len(classes) + 1)}
        self.label_to_cat_id: dict[int, int] = dict(self.cat_id_to_label)
        label_of = {name: k for k, name in enumerate(classes, 1)}

        list_file = os.path.join(self.root, "ImageSets", "Main", f"{image_set}.txt")
        try:
            with open(list_file, encoding="utf-8") as f:
                names = [line.split()[0] for line in f if line.strip()]
        except OSError as e:
            raise ValueError(f"{list_file}: cannot read image list ({e.strerror or e})") from e
        self.image_names: list[str] = names
        bad = BadRecordCounter()
        self._image_root = os.path.join(self.root, "JPEGImages")
        self._table = _table([self._parse(name, label_of, bad) for name in names],
                             _numeric_ids(names))
        bad.warn(logger, list_file)
        self.num_bad_records = bad.total()
        self.bad_records: dict[str, int] = dict(bad.counts)

    def _parse(self, name: str, label_of: dict[str, int], bad: BadRecordCounter) -> _Parsed:
        xml_file = os.path.join(self.root, "Annotations", f"{name}.xml")
        try:
            tree = ET.parse(xml_file).getroot()
        except OSError as e:
            raise ValueError(f"{xml_file}: cannot read annotation ({e.strerror or e})") from e
        except ET.ParseError as e:
            raise ValueError(f"{xml_file}: malformed XML: {e}") from e
        width = _positive_int(tree, "size/width", xml_file)
        height = _positive_int(tree, "size/height", xml_file)
        file_name = f"{name}.jpg"
        file_tag = tree.findtext("filename")
        if (not os.path.exists(os.path.join(self._image_root, file_name)) and file_tag
                and file_tag.strip()):
            file_name = os.path.basename(file_tag.strip())

        objects: list[tuple[tuple[float, float, float, float], int, bool]] = []
        for obj in tree.iter("object"):
            cls = (obj.findtext("name") or "").strip()
            if cls not in label_of:
                bad.add("objects of unknown classes dropped")
                continue
            bb = obj.find("bndbox")
            try:
                if bb is None:
                    raise ValueError("no <bndbox>")
                coords = [float(_text(bb, k, xml_file)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError:
                bad.add("objects with a missing or malformed <bndbox> dropped")
                continue
            x1, y1, x2, y2 = coords
            box = clean_box(x1 - 1.0, y1 - 1.0, x2, y2, width, height, bad)
            if box is None:
                continue
            diff = (obj.findtext("difficult") or "0").strip()
            objects.append((box, label_of[cls], diff not in ("0", "")))
        return file_name, height, width, objects

    def __repr__(self) -> str:
        return (f"VOCDetection(root={self.root!r}, image_set={self.image_set!r}, "
                f"images={len(self)}, classes={len(self.class_names) - 1})")
