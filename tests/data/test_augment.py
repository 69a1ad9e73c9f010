"""The augmentation for real photos (issue 12): vertical flip, random crop (zoom-in scale
jitter), hue jitter; and multi-scale training sizes that survive the model's own resize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rfcn.data.transforms import ColorJitter, RandomCrop, RandomVerticalFlip
from rfcn.models.transform import RFCNTransform


def _image_with_boxes(rng: np.random.Generator, h: int = 90, w: int = 120):
    img = np.zeros((h, w, 3), np.uint8)
    boxes = []
    for _ in range(5):
        x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x2, y2 = x1 + int(rng.integers(6, 20)), y1 + int(rng.integers(6, 20))
        img[y1:y2, x1:x2] = (255, 0, 0)
        boxes.append([x1, y1, x2, y2])
    n = len(boxes)
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.arange(1, n + 1),
              "iscrowd": torch.zeros(n, dtype=torch.bool),
              "difficult": torch.tensor([False, True, False, False, False]), "image_id": 7}
    return img, target


def test_vertical_flip_moves_boxes_with_pixels() -> None:
    img, t = _image_with_boxes(np.random.default_rng(0))
    out, t2 = RandomVerticalFlip(1.0)(img, t, np.random.default_rng(0))
    for box in t2["boxes"].tolist():
        x1, y1, x2, y2 = (int(v) for v in box)
        assert out[y1:y2, x1:x2, 0].min() == 255
    back, t3 = RandomVerticalFlip(1.0)(out, t2, np.random.default_rng(0))
    assert np.array_equal(back, img) and torch.equal(t3["boxes"], t["boxes"])


@pytest.mark.parametrize("seed", range(8))
def test_crop_keeps_boxes_on_their_pixels_and_flags_aligned(seed: int) -> None:
    rng = np.random.default_rng(seed)
    img, t = _image_with_boxes(rng)
    out, t2 = RandomCrop(1.0, min_scale=0.5)(img, t, np.random.default_rng(seed))
    assert out.shape[0] >= 45 and out.shape[1] >= 60
    n = len(t2["boxes"])
    assert len(t2["labels"]) == len(t2["iscrowd"]) == len(t2["difficult"]) == n
    for box, label in zip(t2["boxes"].tolist(), t2["labels"].tolist(), strict=True):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= out.shape[1] and 0 <= y1 < y2 <= out.shape[0]
        assert out[int(y1):int(y2), int(x1):int(x2), 0].min() == 255
        # the label travels with its box: the same-label original box overlaps the crop
        k = label - 1
        assert bool(t2["difficult"][t2["labels"] == label][0]) == bool(t["difficult"][k])
    same, t3 = RandomCrop(0.0)(img, t, np.random.default_rng(seed))
    assert same is img and t3 is t


def test_hue_jitter_shifts_hue_keeps_the_rest() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 200  # red
    out, _ = ColorJitter(0.0, hue=0.25)(img, {"boxes": torch.zeros(0, 4)},
                                        np.random.default_rng(3))
    h_in = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[0, 0, 0]
    h_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[0, 0, 0]
    assert out.shape == img.shape and h_in != h_out
    with pytest.raises(ValueError, match="hue"):
        ColorJitter(0.1, hue=0.7)


def test_multi_scale_sizes_survive_the_model_resize() -> None:
    """The loader resizes to one of the training sizes; the model's transform must keep it
    (it used to resize every image back to min_size, undoing multi-scale training)."""
    t = RFCNTransform(160, 400, [0.0] * 3, [1.0] * 3, train_min_sizes=(128, 160, 192))
    t.train()
    torch.manual_seed(0)
    for h, w in [(192, 256), (128, 171), (160, 213)]:  # already at a training size
        image = torch.rand(3, h, w)
        out, target = t.resize(image, {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]])})
        assert out.shape[-2:] == (h, w) and target["boxes"].tolist() == [[1, 2, 30, 40]]
    out, _ = t.resize(torch.rand(3, 480, 640), None)  # not resized by a loader: a random size
    assert min(out.shape[-2:]) in (128, 160, 192)
    t.eval()
    out, _ = t.resize(torch.rand(3, 192, 256), None)
    assert min(out.shape[-2:]) == 160  # evaluation always at min_size
