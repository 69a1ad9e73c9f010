"""Convert VOC-XML, YOLO-txt and labelme datasets into COCO JSON for ``dataset=coco_json``.

    report = convert("voc", "path/to/folder", "out/", val_fraction=0.2)
    # out/train.json, out/val.json (or out/annotations.json), out/convert_report.json
    # report.img_dir: what every file_name is relative to; report.train_command()

One module per format reads its files into `sources.SourceImage` records; `coco_writer` checks
every box the same way (clip to the image; drop empty, non-finite, unknown-class boxes), splits
and writes. Nothing is silently lost: every dropped or clipped box and every skipped file is a
`ReportEntry` naming its file. A bad file never stops a conversion; an input with no usable
image does (``ValueError`` naming it).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from rfcn.data.convert.coco_writer import REPORT_FILE, resolve_classes, write_coco, write_report
from rfcn.data.convert.labelme import read_labelme
from rfcn.data.convert.report import ConversionReport, ReportEntry, SplitSummary
from rfcn.data.convert.sources import Source
from rfcn.data.convert.voc import read_voc
from rfcn.data.convert.yolo import read_yolo

__all__ = ["FORMATS", "REPORT_FILE", "ConversionReport", "ReportEntry", "SplitSummary", "convert"]

logger = logging.getLogger(__name__)

_Reader = Callable[[Path, ConversionReport, Path | None], Source]
_READERS: dict[str, _Reader] = {"voc": read_voc, "yolo": read_yolo, "labelme": read_labelme}
FORMATS: tuple[str, ...] = tuple(_READERS)


def convert(
    source_format: str,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> ConversionReport:
    """Convert a dataset to COCO JSON files in ``output``.

    Args:
        source_format: ``voc``, ``yolo`` or ``labelme``.
        input: a VOC folder, a YOLO data.yaml (or its folder), a labelme folder.
        output: directory for ``annotations.json`` (no split) or ``train.json``/``val.json``
            (and ``test.json``: YOLO), and ``convert_report.json``.
        classes: category names in id order (1..C); None: the format's (YOLO ``names``) or
            every class name found, sorted. Boxes of other classes are dropped (reported).
        val_fraction: in [0, 1): the share of images held out as ``val.json`` by a shuffle
            seeded with ``seed``; ignored when the source defines its splits (YOLO val).
        seed: the split's seed.

    Returns:
        The report (also written to ``output/convert_report.json``).

    Raises:
        ValueError: unknown format, bad arguments, an unusable input (missing, nothing to read,
            no usable image, no class), or a split impossible with the images found.
    """
    if source_format not in _READERS:
        raise ValueError(f"unknown format {source_format!r}: expected one of "
                         f"{', '.join(FORMATS)}")
    if not (isinstance(val_fraction, int | float) and math.isfinite(val_fraction)
            and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    in_path, out_path = Path(input).expanduser().resolve(), Path(output).expanduser().resolve()
    if not in_path.exists():
        raise ValueError(f"{in_path}: no such file or directory")
    report = ConversionReport(source_format, str(in_path), str(out_path))
    source = _READERS[source_format](in_path, report, out_path)
    if not any(source.splits.values()):
        write_report(report, out_path)
        raise ValueError(f"{in_path}: no usable image ({len(report.entries)} problems, see "
                         f"{out_path / REPORT_FILE})")
    names = resolve_classes(classes, source, str(in_path))
    write_coco(source, names, out_path, float(val_fraction), seed, report)
    for entry in report.entries:
        logger.debug("%s", entry)
    logger.info("%s -> %s: %s; %d records changed or left out", in_path, out_path,
                ", ".join(f"{k} {s.num_images} images" for k, s in report.splits.items()),
                len(report.entries))
    return report
