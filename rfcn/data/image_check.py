"""Decode every image of a dataset once, in parallel, and say which ones cannot be trained on.

    problems = check_images(paths, expected_hw=[(480, 640), None, ...])
    for p in problems:
        print(p)  # "photos/b.jpg: truncated JPEG file (no end-of-image marker)"

Each image is decoded by `rfcn.data.image_io.read_image_rgb`, the reader the training loader
uses, so what passes here loads there: a missing, empty, truncated or non-image file is a
problem, as is a decoded size that differs from the annotated one. Decoding runs in a thread
pool (OpenCV releases the GIL while it decodes); results keep the order of ``paths``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from rfcn.data.image_io import read_image_rgb

__all__ = ["ImageInfo", "ImageProblem", "ProblemKind", "check_images", "default_num_workers",
           "inspect_images"]

logger = logging.getLogger(__name__)

ProblemKind = Literal["unreadable", "truncated", "size_mismatch"]
_MAX_WORKERS = 8  # decoding is memory-bound beyond a few threads


@dataclass(frozen=True)
class ImageProblem:
    """Why one image cannot be used as annotated.

    Attributes:
        path: the image file, as given.
        problem: what is wrong, without the path ("truncated JPEG file (...)").
        kind: ``unreadable`` (missing, empty, not an image, corrupt), ``truncated`` (a JPEG cut
            short) or ``size_mismatch`` (decodes, but not at the annotated size).
    """

    path: str
    problem: str
    kind: ProblemKind

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class ImageInfo:
    """One decoded image: its (h, w) (None when it does not decode) and its problem, if any."""

    path: str
    size: tuple[int, int] | None
    problem: ImageProblem | None = None


def default_num_workers() -> int:
    """The threads to decode with: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_WORKERS))


def _inspect(path: str, expected: tuple[int, int] | None) -> ImageInfo:
    try:
        h, w = read_image_rgb(path).shape[:2]
    except ValueError as e:
        msg = str(e)
        problem = msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg
        kind: ProblemKind = "truncated" if problem.startswith("truncated") else "unreadable"
        return ImageInfo(path, None, ImageProblem(path, problem, kind))
    size = (int(h), int(w))
    if expected is not None and tuple(expected) != size:
        text = f"decoded (h, w) = {size}, annotated {tuple(expected)}"
        return ImageInfo(path, size, ImageProblem(path, text, "size_mismatch"))
    return ImageInfo(path, size)


def inspect_images(
    paths: Sequence[str | os.PathLike[str]],
    expected_hw: Sequence[tuple[int, int] | None] | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    desc: str = "checking images",
) -> list[ImageInfo]:
    """Decode every image once; one `ImageInfo` per path, in the order of ``paths``.

    Args:
        paths: image files.
        expected_hw: per path, the annotated (h, w), or None where there is none to check.
        num_workers: decoding threads; None: `default_num_workers`.
        progress: show a tqdm bar (only on a terminal; never in logs or pipes).
        desc: the bar's label.

    Raises:
        ValueError: ``expected_hw`` and ``paths`` differ in length, or ``num_workers < 1``.
    """
    names = [os.fspath(p) for p in paths]
    expected = list(expected_hw) if expected_hw is not None else [None] * len(names)
    if len(expected) != len(names):
        raise ValueError(f"expected_hw has {len(expected)} entries for {len(names)} paths")
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers!r}")
    workers = min(workers, max(len(names), 1))
    bar = tqdm(total=len(names), desc=desc, unit="img", disable=None if progress else True,
               leave=False)
    try:
        if workers == 1:
            infos = []
            for name, hw in zip(names, expected, strict=True):
                infos.append(_inspect(name, hw))
                bar.update()
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="image-check") as pool:
                infos = []
                for info in pool.map(_inspect, names, expected):
                    infos.append(info)
                    bar.update()
    finally:
        bar.close()
    bad = sum(info.problem is not None for info in infos)
    logger.debug("decoded %d images with %d threads: %d problems", len(infos), workers, bad)
    return infos


def check_images(
    paths: Sequence[str | os.PathLike[str] | Path],
    expected_hw: Sequence[tuple[int, int] | None] | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[ImageProblem]:
    """The problems of the images that cannot be used as annotated, in the order of ``paths``
    (empty when all decode, at their annotated size where one is given).

    See `inspect_images` for the arguments; it also returns the decoded sizes.
    """
    infos = inspect_images(paths, expected_hw, num_workers, progress)
    return [info.problem for info in infos if info.problem is not None]
