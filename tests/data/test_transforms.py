"""Geometry: after every transform the box still bounds the drawn rectangle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfcn.data.transforms import (
    ColorJitter,
    Compose,
    RandomHorizontalFlip,
    RandomResize,
    build_train_transforms,
)


def pixel_box(img: np.ndarray, thresh: int = 128) -> list[float]:
    """Continuous xyxy box of the pixels brighter than ``thresh`` in the red channel."""
    ys, xs = np.nonzero(img[..., 0] > thresh)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def sample(h: int = 60, w: int = 80, box=(12, 7, 41, 30)) -> tuple[np.ndarray, dict]:
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = (255, 0, 0)
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([1]),
              "image_id": 3}
    return img, target


def test_flip_moves_box_with_pixels() -> None:
    img, t = sample()
    out, t2 = RandomHorizontalFlip(1.0)(img, t, np.random.default_rng(0))
    assert out.shape == img.shape
    assert t2["boxes"][0].tolist() == pixel_box(out) == [80 - 41, 7, 80 - 12, 30]
    assert t2["labels"] is t["labels"] and t2["image_id"] == 3
    same, t3 = RandomHorizontalFlip(0.0)(img, t, np.random.default_rng(0))
    assert same is img and t3["boxes"].tolist() == t["boxes"].tolist()


@pytest.mark.parametrize(("min_size", "max_size", "expect_hw"), [
    (120, 1000, (120, 160)),  # upscale x2
    (30, 1000, (30, 40)),  # downscale x0.5
    (120, 100, (75, 100)),  # capped by max_size
])
def test_resize_scales_box_with_pixels(min_size, max_size, expect_hw) -> None:
    img, t = sample()
    out, t2 = RandomResize([min_size], max_size)(img, t, np.random.default_rng(0))
    assert out.shape[:2] == expect_hw
    sy, sx = expect_hw[0] / 60, expect_hw[1] / 80
    expected = [12 * sx, 7 * sy, 41 * sx, 30 * sy]
    torch.testing.assert_close(t2["boxes"][0], torch.tensor(expected))
    np.testing.assert_allclose(pixel_box(out), expected, atol=1.0)


def test_random_resize_picks_from_list_deterministically() -> None:
    img, t = sample()
    rr = RandomResize([20, 40, 60], 1000)
    shorts = [rr(img, t, np.random.default_rng(s))[0].shape[0] for s in range(30)]
    assert set(shorts) == {20, 40, 60}
    again = [rr(img, t, np.random.default_rng(s))[0].shape[0] for s in range(30)]
    assert shorts == again
    with pytest.raises(ValueError):
        RandomResize([], 10)


def test_color_jitter_keeps_boxes_and_is_seeded() -> None:
    img, t = sample()
    img = img + 40
    cj = ColorJitter(0.4)
    a, ta = cj(img, t, np.random.default_rng(1))
    b, _ = cj(img, t, np.random.default_rng(1))
    c, _ = cj(img, t, np.random.default_rng(2))
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert ta["boxes"] is t["boxes"]
    with pytest.raises(ValueError):
        ColorJitter(1.5)


def test_train_pipeline_geometry_and_determinism() -> None:
    tf = build_train_transforms([30, 45, 90], 200, flip_prob=0.5, color_jitter=0.2)
    assert isinstance(tf, Compose)
    flips = set()
    for seed in range(12):
        img, t = sample()
        out, t2 = tf(img, t, np.random.default_rng(seed))
        out2, t3 = tf(img, t, np.random.default_rng(seed))
        assert np.array_equal(out, out2) and torch.equal(t2["boxes"], t3["boxes"])
        assert min(out.shape[:2]) in (30, 45, 90)
        np.testing.assert_allclose(pixel_box(out, 60), t2["boxes"][0].tolist(), atol=1.5)
        flips.add(bool(t2["boxes"][0, 0] > out.shape[1] / 2 - 10))
    assert flips == {True, False}


def test_empty_boxes_pass_through() -> None:
    img = np.zeros((10, 20, 3), np.uint8)
    t = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    out, t2 = build_train_transforms(20, 100, flip_prob=1.0)(img, t, np.random.default_rng(0))
    assert out.shape == (20, 40, 3) and t2["boxes"].shape == (0, 4)
