"""rfcn.data.image_check: every image decoded once, in parallel, problems named by file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rfcn.data.image_check import ImageProblem, check_images, default_num_workers, inspect_images


def _images(tmp_path: Path) -> list[Path]:
    """good (20x30 JPEG), truncated JPEG, text named .jpg, empty, missing, good PNG (10x12)."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", noise)[1].tobytes()
    paths = [tmp_path / n for n in ("good.jpg", "cut.jpg", "text.jpg", "empty.png",
                                    "missing.jpg", "small.png")]
    paths[0].write_bytes(cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8))[1].tobytes())
    paths[1].write_bytes(data[: len(data) // 2])
    paths[2].write_text("not an image\n")
    paths[3].write_bytes(b"")
    assert cv2.imwrite(str(paths[5]), np.zeros((10, 12), np.uint8))
    return paths


@pytest.mark.parametrize("num_workers", [1, 3])
def test_problems_in_order_with_kinds(tmp_path: Path, num_workers: int) -> None:
    paths = _images(tmp_path)
    expected = [(20, 30), (64, 64), None, None, None, (12, 10)]  # small.png: (h, w) swapped
    problems = check_images(paths, expected, num_workers=num_workers, progress=False)
    assert [(Path(p.path).name, p.kind) for p in problems] == [
        ("cut.jpg", "truncated"), ("text.jpg", "unreadable"), ("empty.png", "unreadable"),
        ("missing.jpg", "unreadable"), ("small.png", "size_mismatch")]
    assert problems[0].problem == "truncated JPEG file (no end-of-image marker)"
    assert problems[2].problem == "empty file"
    assert problems[4].problem == "decoded (h, w) = (10, 12), annotated (12, 10)"
    assert str(problems[1]) == f"{paths[2]}: {problems[1].problem}"  # names the file


def test_inspect_gives_decoded_sizes(tmp_path: Path) -> None:
    paths = _images(tmp_path)
    infos = inspect_images(paths, progress=False)
    assert [i.size for i in infos] == [(20, 30), None, None, None, None, (10, 12)]
    assert infos[0].problem is None and infos[5].problem is None  # no size given: no check
    assert isinstance(infos[1].problem, ImageProblem)


def test_degenerate_inputs(tmp_path: Path) -> None:
    assert check_images([], progress=False) == []
    with pytest.raises(ValueError, match="expected_hw has 1 entries for 2 paths"):
        check_images([tmp_path / "a", tmp_path / "b"], [(1, 1)])
    with pytest.raises(ValueError, match="num_workers"):
        check_images([tmp_path / "a"], num_workers=0)
    assert 1 <= default_num_workers() <= 8
