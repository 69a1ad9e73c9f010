"""Decode every image of a conversion once and settle its size before anything is written.

Annotation files state an image size (VOC ``<size>``, labelme ``imageHeight``/``imageWidth``)
that tools fill in when the image is opened and never update: a re-exported or replaced
image, or one cut short by an interrupted copy, then disagrees with it. So every image is
decoded (`rfcn.data.image_check.inspect_images`, the training loader's reader, in parallel):
an image that does not decode is skipped, naming the file and why; one whose decoded size
differs from the annotated one keeps its boxes at the decoded size (the annotator drew on the
decoded pixels), reported. An image two annotation files point at is kept with the first
(reported), never with both files' boxes merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rfcn.data.convert.report import (
    CORRECTED,
    SKIPPED,
    TRUNCATED_IMAGE,
    UNREADABLE_IMAGE,
    ConversionReport,
)
from rfcn.data.convert.sources import ReadOptions, SourceImage, SourceObject
from rfcn.data.image_check import ImageInfo, ImageProblem, inspect_images

__all__ = ["PendingImage", "SizeWording", "decode_images", "finish_images", "skip_reason"]


@dataclass(frozen=True)
class PendingImage:
    """An annotation whose image file is found but not yet decoded.

    Attributes:
        path: the image, absolute.
        source: the annotation file, as shown in the report.
        image_shown: the image, as shown in the report.
        annotated_hw: the (h, w) the annotation states; None when it states none (valid).
        objects: its boxes, in pixels.
        entries: (action, reason, detail) report entries of the annotation, added only when
            the image is usable (a skipped file is one entry, not one per box).
    """

    path: str
    source: str
    image_shown: str
    annotated_hw: tuple[int, int] | None
    objects: tuple[SourceObject, ...]
    entries: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class SizeWording:
    """How a format's stated size is named in report reasons."""

    missing: str  # "no valid <size>: size read from the image"
    mismatch: str  # "<size> differs from the image: image's used"


def skip_reason(problem: ImageProblem) -> str:
    """The report reason of an image that does not decode."""
    return TRUNCATED_IMAGE if problem.kind == "truncated" else UNREADABLE_IMAGE


def decode_images(paths: Sequence[str], options: ReadOptions) -> dict[str, ImageInfo]:
    """Image path -> its decoded size or problem; each distinct path decoded once."""
    unique = list(dict.fromkeys(paths))
    infos = inspect_images(unique, num_workers=options.num_workers, progress=options.progress,
                           desc="decoding images")
    return dict(zip(unique, infos, strict=True))


def finish_images(pending: Sequence[PendingImage], report: ConversionReport,
                  options: ReadOptions, wording: SizeWording) -> list[SourceImage]:
    """The records of the images that decode, at their decoded size; the others skipped."""
    infos = decode_images([p.path for p in pending], options)
    images = []
    claimed: dict[str, str] = {}  # image -> the annotation file that has it
    for p in pending:
        info = infos[p.path]
        if info.size is None:
            assert info.problem is not None
            report.add(p.source, SKIPPED, skip_reason(info.problem),
                       f"image {p.image_shown}: {info.problem.problem}")
            continue
        if p.path in claimed:  # one image, two annotation files: keep one, never merge
            report.add(p.source, SKIPPED, "image already annotated by another file",
                       f"image {p.image_shown} (kept: {claimed[p.path]})")
            continue
        claimed[p.path] = p.source
        for entry in p.entries:
            report.add(p.source, *entry)
        if p.annotated_hw is None:
            report.add(p.source, CORRECTED, wording.missing,
                       f"image {p.image_shown}: (h, w) = {info.size}")
        elif p.annotated_hw != info.size:
            report.add(p.source, CORRECTED, wording.mismatch,
                       f"image {p.image_shown}: annotated (h, w) = {p.annotated_hw}, "
                       f"decoded {info.size}")
        images.append(SourceImage(path=p.path, source=p.source, height=info.size[0],
                                  width=info.size[1], objects=p.objects))
    return images
