"""Find the image of an annotation file in the folders labelling tools leave behind.

labelImg saves ``annots/x.xml`` beside ``images/x.jpg``, the VOC devkit ``Annotations/`` beside
``JPEGImages/``, CVAT and Roboflow their own variants, and people move folders around. So an
image is looked up by the annotation's stem (``x.*``) or the file name it gives (``<filename>``,
``imagePath``) among every image under the input folder (or under ``img_dir`` when given),
and the closest one wins: in the annotation's own folder, then in a sibling folder, then
anywhere; the named file name, then ``.jpg``, then the shallower path break ties. Annotations
lying directly in the input folder also see the input's sibling folders (``input=photos/annots``
with ``photos/images`` beside it).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rfcn.data.convert.sources import IMAGE_EXTENSIONS, find_files

__all__ = ["ImageFinder", "ImageIndex", "Match"]

_SIBLING_DEPTH = 2  # how deep the input's sibling folders are searched


@dataclass(frozen=True)
class Match:
    """The image found, and how many other images were as good a match (0: unambiguous)."""

    path: Path
    ties: int = 0


def _base_name(hint: str | None) -> str | None:
    if not hint:
        return None
    return os.path.basename(hint.strip().replace("\\", "/")) or None


class ImageIndex:
    """Every image file under some folders, by stem and by file name (symlinks followed)."""

    def __init__(self, roots: list[Path], exclude: Path | None = None,
                 max_depth: int | None = None) -> None:
        self._by_stem: dict[str, list[Path]] = defaultdict(list)
        self._by_name: dict[str, list[Path]] = defaultdict(list)
        self.size = 0
        for root in roots:
            for path in find_files(root, IMAGE_EXTENSIONS, exclude, max_depth):
                self._by_stem[path.stem].append(path)
                self._by_name[path.name].append(path)
                self.size += 1

    def lookup(self, stem: str, hint: str | None, near: Path) -> Match | None:
        """The best image named ``stem.*`` or ``hint``'s base name for an annotation in the
        folder ``near``; None when there is none."""
        name = _base_name(hint)
        candidates = set(self._by_stem.get(stem, ()))
        if name is not None:
            candidates.update(self._by_name.get(name, ()))
        if not candidates:
            return None
        ranked = sorted(candidates, key=lambda p: (*_rank(p, near, name), str(p)))
        best = _rank(ranked[0], near, name)
        return Match(ranked[0], sum(_rank(p, near, name) == best for p in ranked[1:]))


def _rank(image: Path, near: Path, name: str | None) -> tuple[int, int, int, int]:
    """Lower is better: folders up from ``near`` to the common one, not the named file, not
    ``.jpg``, folders down from the common one."""
    common = Path(os.path.commonpath([image.parent, near]))
    up = len(near.parts) - len(common.parts)
    down = len(image.parent.parts) - len(common.parts)
    unnamed = int(name is not None and image.name != name)
    return up, unnamed, int(image.suffix.lower() != ".jpg"), down


class ImageFinder:
    """Finds annotation images under ``input`` (or only under ``img_dir`` when given)."""

    def __init__(self, input: Path, img_dir: Path | None, exclude: Path | None) -> None:
        self.input, self.img_dir, self.exclude = input, img_dir, exclude
        self._index: ImageIndex | None = None
        self._siblings: ImageIndex | None = None

    def where(self) -> str:
        """Where images are looked for, for "image not found" report entries."""
        if self.img_dir is not None:
            return f"under img_dir {self.img_dir}"
        return f"beside it, in sibling folders or anywhere under {self.input}"

    def find(self, annotation: Path, hint: str | None) -> Match | None:
        """The image of ``annotation`` (by its stem, else ``hint``'s base name)."""
        if self._index is None:
            root = self.img_dir if self.img_dir is not None else self.input
            self._index = ImageIndex([root], self.exclude)
        near = Path(os.path.abspath(annotation.parent))
        found = self._index.lookup(annotation.stem, hint, near)
        if found is not None or self.img_dir is not None or near != self.input:
            return found
        if self._siblings is None:
            self._siblings = ImageIndex(self._sibling_dirs(), self.exclude, _SIBLING_DEPTH)
        return self._siblings.lookup(annotation.stem, hint, near)

    def _sibling_dirs(self) -> list[Path]:
        parent = self.input.parent
        output = os.path.realpath(self.exclude) if self.exclude is not None else None
        try:
            entries = sorted(parent.iterdir()) if parent != self.input else []
        except OSError:  # an unreadable parent: nothing more to search
            return []
        return [d for d in entries if d.is_dir() and d != self.input
                and not d.name.startswith(".") and os.path.realpath(d) != output]
