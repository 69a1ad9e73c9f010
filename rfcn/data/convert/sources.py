"""What every format reader hands to the COCO writer, and the file helpers they share.

A reader turns its files into `SourceImage` records: an image that decodes, of its decoded size,
with the boxes read from its annotation, as continuous xyxy pixels and not yet checked against
the image (the writer checks, clips and drops them the same way for every format). Problems
only a reader can see (a malformed file, a line that is not a box, a missing image) it reports
itself; images are decoded by `rfcn.data.convert.decoding`.

Folders are walked following symbolic links (to files and to folders; a link back up the tree
is walked once), skipping hidden folders and macOS ``__MACOSX`` archive debris.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rfcn.data.image_io import IMAGE_SUFFIXES

__all__ = [
    "IMAGE_EXTENSIONS",
    "ReadOptions",
    "Source",
    "SourceImage",
    "SourceObject",
    "annotation_files",
    "display_path",
    "find_files",
    "find_image",
]

IMAGE_EXTENSIONS = IMAGE_SUFFIXES
# what a folder of another format's annotations holds: named in "no .xml file found" errors
_OTHER_FORMATS = {".xml": "voc", ".txt": "yolo", ".json": "labelme"}


@dataclass(frozen=True)
class SourceObject:
    """One box as read: class name, continuous xyxy pixels (unchecked), where it came from."""

    name: str
    box: tuple[float, float, float, float]
    detail: str  # names the record in report entries: "object 2 'dog'", "line 3"
    difficult: bool = False


@dataclass(frozen=True)
class SourceImage:
    """An image that decodes, of its decoded size (h, w), and the boxes of its annotation."""

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


@dataclass(frozen=True)
class ReadOptions:
    """What every reader is told besides its input.

    Attributes:
        output: the output directory: never read as input; labelme writes embedded images
            (``imageData``) under ``output/images``.
        img_dir: where the images are, when not beside or near their annotations.
        classes: the class names the caller gave (YOLO without names: id k is ``classes[k]``).
        num_workers: image decoding threads (None: as many as cores, at most 8).
        progress: show a progress bar while decoding (on a terminal only).
    """

    output: Path
    img_dir: Path | None = None
    classes: tuple[str, ...] | None = None
    num_workers: int | None = None
    progress: bool = True


def display_path(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to ``base`` when it lies under it (shorter report lines), else as is."""
    path, base = os.path.abspath(path), os.path.abspath(base)
    try:
        if os.path.commonpath([path, base]) == base:
            return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # different drives
        pass
    return path


def _under(path: str, directory: str | None) -> bool:
    return directory is not None and (path == directory
                                      or path.startswith(directory.rstrip(os.sep) + os.sep))


def _skipped_dir(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def find_files(root: Path, suffixes: tuple[str, ...], exclude: Path | None = None,
               max_depth: int | None = None) -> list[Path]:
    """Files under ``root`` (recursive, symlinks followed) whose lower-case suffix is in
    ``suffixes``, sorted; nothing under ``exclude`` when it lies inside ``root`` (the output
    directory: a rerun must not read its own output); folders at most ``max_depth`` below
    ``root`` (None: all)."""
    root = Path(os.path.abspath(root))
    real_exclude = os.path.realpath(exclude) if exclude is not None else None
    if _under(os.path.realpath(root), real_exclude):  # output is the input or above it
        real_exclude = None
    seen = {os.path.realpath(root)}

    def walk() -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            here = Path(dirpath)
            depth = len(here.relative_to(root).parts)
            keep = []
            for d in sorted(dirnames):
                real = os.path.realpath(here / d)
                if (_skipped_dir(d) or real in seen or _under(real, real_exclude)
                        or (max_depth is not None and depth >= max_depth)):
                    continue
                seen.add(real)
                keep.append(d)
            dirnames[:] = keep
            for name in filenames:
                if Path(name).suffix.lower() in suffixes and not name.startswith("._"):
                    yield here / name

    return sorted(p for p in walk() if p.is_file())


def annotation_files(input: Path, suffix: str, what: str, exclude: Path | None) -> list[Path]:
    """The ``suffix`` files under the folder ``input``.

    Raises:
        ValueError: ``input`` is not a directory, or holds no such file (``what`` says what
            was expected; files of another format found instead are named).
    """
    if not input.is_dir():
        raise ValueError(f"{input}: not a directory (expected {what})")
    files = find_files(input, (suffix,), exclude)
    if not files:
        others = [f"{len(found)} {ext} files (from={fmt}?)"
                  for ext, fmt in _OTHER_FORMATS.items() if ext != suffix
                  and (found := find_files(input, (ext,), exclude, max_depth=3))]
        seen = f"; found {', '.join(others)}" if others else ""
        raise ValueError(f"{input}: no {suffix} file found (expected {what}){seen}")
    return files


def find_image(directory: Path, stem: str, hint: str | None = None) -> Path | None:
    """The image of an annotation: ``directory/hint`` (the file name the annotation gives, or
    its base name), else ``directory/stem.<image extension>``; None when none exists. The path
    is absolute, symlinks kept (``file_name`` then stays under the dataset folder)."""
    candidates: list[Path] = []
    if hint:
        hint = hint.strip().replace("\\", "/")
        candidates += [directory / hint, directory / os.path.basename(hint)]
    for ext in IMAGE_EXTENSIONS:
        candidates += [directory / f"{stem}{ext}", directory / f"{stem}{ext.upper()}"]
    for c in candidates:
        if c.suffix.lower() in IMAGE_EXTENSIONS and c.is_file():
            return Path(os.path.abspath(c))
    return None
