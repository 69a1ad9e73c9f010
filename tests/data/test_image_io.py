"""Degenerate and unusual image files (the common ones are covered via the datasets)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rfcn.data.image_io import read_image_rgb, to_tensor


def test_16bit_rgba(tmp_path: Path) -> None:
    bgra16 = np.zeros((5, 6, 4), np.uint16)
    bgra16[..., 0], bgra16[..., 2], bgra16[..., 3] = 0, 65535, 1000
    cv2.imwrite(str(tmp_path / "a.png"), bgra16)
    img = read_image_rgb(tmp_path / "a.png")
    assert img.shape == (5, 6, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [255, 0, 0]


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.jpg: empty file"):
        read_image_rgb(tmp_path / "e.jpg")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        read_image_rgb(tmp_path)


def test_complete_jpeg_with_trailing_bytes_loads(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 50, np.uint8))
    (tmp_path / "t.jpg").write_bytes(buf.tobytes() + b"\x00\x00garbage")
    assert read_image_rgb(tmp_path / "t.jpg").shape == (8, 8, 3)


def test_to_tensor_layout() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = to_tensor(img)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32 and t.is_contiguous()
    assert t[2, 1, 0] == pytest.approx(img[1, 0, 2] / 255)
