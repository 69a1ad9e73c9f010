"""What every format reader hands to the COCO writer, and the file helpers they share.

A reader turns its files into `SourceImage` records: an existing image of known size with the
boxes read from its annotation, as continuous xyxy pixels and not yet checked against the image
(the writer checks, clips and drops them the same way for every format). Problems only a reader
can see (a malformed file, a line that is not a box, a missing image) it reports itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rfcn.data.image_io import read_image_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "Source",
    "SourceImage",
    "SourceObject",
    "display_path",
    "find_files",
    "find_image",
    "image_size",
]

# What YOLO tooling lists as images (lower case); OpenCV reads all but .heic (reported then).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo",
                    ".pfm", ".heic")


@dataclass(frozen=True)
class SourceObject:
    """One box as read: class name, continuous xyxy pixels (unchecked), where it came from."""

    name: str
    box: tuple[float, float, float, float]
    detail: str  # names the record in report entries: "object 2 'dog'", "line 3"
    difficult: bool = False


@dataclass(frozen=True)
class SourceImage:
    """An existing image of known size (h, w) and the boxes of its annotation file."""

    path: str  # absolute image path
    source: str  # the annotation file, as shown in the report
    height: int
    width: int
    objects: tuple[SourceObject, ...] = ()


@dataclass
class Source:
    """A reader's result.

    Attributes:
        splits: ``{"all": images}``, or the splits the source defines (``train``, ``val``,
            ``test``; an ``all`` next to them is split by the writer when asked).
        img_root: the directory ``file_name`` should be relative to, when every image is
            under it (the writer falls back to a common parent).
        classes: the class order the format defines (YOLO ``names``), None to collect names.
    """

    splits: dict[str, list[SourceImage]]
    img_root: str
    classes: list[str] | None = None


def display_path(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to ``base`` when it lies under it (shorter report lines), else as is."""
    path, base = os.path.abspath(path), os.path.abspath(base)
    try:
        if os.path.commonpath([path, base]) == base:
            return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # different drives
        pass
    return path


def _under(path: Path, directory: Path | None) -> bool:
    return directory is not None and (path == directory or directory in path.parents)


def find_files(root: Path, suffixes: tuple[str, ...], exclude: Path | None = None) -> list[Path]:
    """Files under ``root`` (recursive) whose lower-case suffix is in ``suffixes``, sorted;
    nothing under ``exclude`` when it lies inside ``root`` (the output directory: a rerun must
    not read its own output)."""
    root = root.resolve()
    exclude = exclude.resolve() if exclude is not None else None
    if exclude is not None and _under(root, exclude):  # output is the input or above it
        exclude = None

    def walk() -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not _under(here / d, exclude))
            for name in filenames:
                if Path(name).suffix.lower() in suffixes:
                    yield here / name

    return sorted(walk())


def annotation_files(input: Path, suffix: str, what: str, exclude: Path | None) -> list[Path]:
    """The ``suffix`` files under the folder ``input``.

    Raises:
        ValueError: ``input`` is not a directory, or holds no such file (``what`` says what
            was expected).
    """
    if not input.is_dir():
        raise ValueError(f"{input}: not a directory (expected {what})")
    files = find_files(input, (suffix,), exclude)
    if not files:
        raise ValueError(f"{input}: no {suffix} file found (expected {what})")
    return files


def find_image(directory: Path, stem: str, hint: str | None = None) -> Path | None:
    """The image of an annotation: ``directory/hint`` (the file name the annotation gives, or
    its base name), else ``directory/stem.<image extension>``; None when none exists."""
    candidates: list[Path] = []
    if hint:
        hint = hint.strip().replace("\\", "/")
        candidates += [directory / hint, directory / os.path.basename(hint)]
    for ext in IMAGE_EXTENSIONS:
        candidates += [directory / f"{stem}{ext}", directory / f"{stem}{ext.upper()}"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    return None


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(h, w) of an image, decoded the way the training loader decodes it.

    Raises:
        ValueError: the message says why the image is unusable (without the path).
    """
    path = os.fspath(path)
    try:
        h, w = read_image_rgb(path).shape[:2]
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg) from None
    return int(h), int(w)
