"""Convert VOC-XML, YOLO-txt and labelme datasets into COCO JSON for ``dataset=coco_json``.

    report = convert("voc", "path/to/folder", "out/", val_fraction=0.2)
    # out/train.json, out/val.json (or out/annotations.json), out/convert_report.json
    # report.img_dir: what every file_name is relative to; report.train_command()

One module per format reads its files into `sources.SourceImage` records, finding the images
in the folders labelling tools leave (`locate`, `yolo_layout`) and decoding every one of them
once (`decoding`): an image that does not decode is skipped and named, a stated size that
differs from the decoded one is corrected. `coco_writer` checks every box the same way (clip to
the image; drop empty, non-finite, unknown-class boxes), splits and writes. Nothing is silently
lost: every dropped or clipped box and every skipped file is a `ReportEntry` naming its file. A
bad file never stops a conversion; an input with no usable image does (``ValueError`` naming
it, its first problems and what to pass).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from rfcn.data.convert.coco_writer import REPORT_FILE, resolve_classes, write_coco, write_report
from rfcn.data.convert.labelme import read_labelme
from rfcn.data.convert.report import (
    ConversionReport,
    ReportEntry,
    SplitSummary,
    no_usable_image_message,
)
from rfcn.data.convert.sources import ReadOptions, Source
from rfcn.data.convert.voc import read_voc
from rfcn.data.convert.yolo import read_yolo

__all__ = ["FORMATS", "REPORT_FILE", "ConversionReport", "ReportEntry", "SplitSummary", "convert"]

logger = logging.getLogger(__name__)

_Reader = Callable[[Path, ConversionReport, ReadOptions], Source]
_READERS: dict[str, _Reader] = {"voc": read_voc, "yolo": read_yolo, "labelme": read_labelme}
FORMATS: tuple[str, ...] = tuple(_READERS)


def convert(
    source_format: str,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    img_dir: str | os.PathLike[str] | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> ConversionReport:
    """Convert a dataset to COCO JSON files in ``output``.

    Args:
        source_format: ``voc``, ``yolo`` or ``labelme``.
        input: a folder of VOC .xml files, a YOLO data.yaml (or its folder, or a folder of
            images and .txt labels, or a CVAT obj.data), a folder of labelme .json files.
        output: directory for ``annotations.json`` (no split) or ``train.json``/``val.json``
            (and ``test.json``: YOLO), and ``convert_report.json``.
        classes: category names in id order (1..C); None: the format's (YOLO ``names``) or
            every class name found, sorted. Boxes of other classes are dropped (reported).
        val_fraction: in [0, 1): the share of images held out as ``val.json`` by a shuffle
            seeded with ``seed``; ignored when the source defines its splits (YOLO val).
        seed: the split's seed.
        img_dir: where the images are, when not near their annotations (the images are
            then looked up by name under it only); None: under ``input``.
        num_workers: image decoding threads; None: the cores, at most 8.
        progress: show a progress bar while decoding images (on a terminal only).

    Returns:
        The report (also written to ``output/convert_report.json``).

    Raises:
        ValueError: unknown format, bad arguments, an unusable input (missing, nothing to read,
            no usable image, no class), or a split impossible with the images found.
    """
    if source_format not in _READERS:
        raise ValueError(f"unknown format {source_format!r}: expected one of "
                         f"{', '.join(FORMATS)}")
    in_path, out_path, options = _checked_arguments(input, output, img_dir, classes,
                                                    val_fraction, seed, num_workers, progress)
    report = ConversionReport(source_format, str(in_path), str(out_path))
    source = _READERS[source_format](in_path, report, options)
    if not any(source.splits.values()):
        write_report(report, out_path)
        raise ValueError(no_usable_image_message(report))
    names = resolve_classes(classes, source, str(in_path))
    write_coco(source, names, out_path, float(val_fraction), seed, report)
    for entry in report.entries:
        logger.debug("%s", entry)
    logger.info("%s -> %s: %s; %d records changed or left out", in_path, out_path,
                ", ".join(f"{k} {s.num_images} images" for k, s in report.splits.items()),
                len(report.entries))
    return report


def _checked_arguments(
    input: str | os.PathLike[str], output: str | os.PathLike[str],
    img_dir: str | os.PathLike[str] | None, classes: Sequence[str] | None,
    val_fraction: float, seed: int, num_workers: int | None, progress: bool,
) -> tuple[Path, Path, ReadOptions]:
    """The resolved input and output paths and the readers' options; ValueError naming the
    first bad argument."""
    if not (isinstance(val_fraction, int | float) and math.isfinite(val_fraction)
            and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    in_path, out_path = Path(input).expanduser().resolve(), Path(output).expanduser().resolve()
    if not in_path.exists():
        raise ValueError(f"{in_path}: no such file or directory")
    img_path = Path(img_dir).expanduser().resolve() if img_dir is not None else None
    if img_path is not None and not img_path.is_dir():
        raise ValueError(f"img_dir {img_path}: not a directory")
    names = None if classes is None else tuple(str(c) for c in classes)
    return in_path, out_path, ReadOptions(output=out_path, img_dir=img_path, classes=names,
                                          num_workers=num_workers, progress=progress)
