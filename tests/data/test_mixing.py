"""Mosaic and copy-paste (rfcn.data.mixing): boxes follow the pixels they name, samples are
a pure function of their seed, both switch off for the last part of the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_builders import good_coco_dataset

from rfcn.data import CocoDetection
from rfcn.data.loader import build_train_loader
from rfcn.data.mixing import SampleMixer, copy_paste, mosaic

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def _sample(k: int, h: int, w: int, boxes: list[list[float]]) -> tuple[np.ndarray, dict]:
    """A grey image whose boxes are filled with colour ``k`` (so a box's pixels say which
    image they came from)."""
    image = np.full((h, w, 3), 90, dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[int(y1):int(y2), int(x1):int(x2)] = COLOURS[k]
    n = len(boxes)
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                   "labels": torch.full((n,), k + 1, dtype=torch.int64),
                   "iscrowd": torch.zeros(n, dtype=torch.bool),
                   "difficult": torch.zeros(n, dtype=torch.bool),
                   "image_id": 100 + k, "orig_size": (h, w)}


def _random_samples(rng: np.random.Generator) -> list[tuple[np.ndarray, dict]]:
    out = []
    for k in range(4):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            x1, y1 = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 12))
            boxes.append([x1, y1, x1 + int(rng.integers(8, 12)), y1 + int(rng.integers(8, 12))])
        out.append(_sample(k, h, w, boxes))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_mosaic_boxes_cover_the_pixels_of_their_image(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = _random_samples(rng)
    image, target = mosaic(samples, np.random.default_rng(seed + 100))
    h, w = samples[0][0].shape[:2]
    assert image.shape == (h, w, 3) and image.dtype == np.uint8
    assert target["image_id"] == 100 and target["orig_size"] == (h, w)
    boxes = target["boxes"]
    assert len(boxes) == len(target["labels"]) == len(target["iscrowd"])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2] - boxes[:, 0]) >= 2).all() and ((boxes[:, 3] - boxes[:, 1]) >= 2).all()
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), target["labels"].tolist(), strict=True):
        # the inside of the box (away from resampled edges) has its image's colour
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        np.testing.assert_allclose(image[cy, cx], COLOURS[label - 1], atol=40)


def test_mosaic_drops_boxes_mostly_outside_and_keeps_flags() -> None:
    a = _sample(0, 64, 64, [[0, 0, 64, 64]])
    a[1]["iscrowd"][0] = True
    kept = 0
    for seed in range(20):
        _, t = mosaic([a, a, a, a], np.random.default_rng(seed))
        assert t["iscrowd"].all()  # crowd stays crowd (the loader drops it afterwards)
        kept += len(t["boxes"])
    assert 0 < kept <= 80


def test_copy_paste_adds_donor_boxes_with_their_pixels() -> None:
    base = _sample(0, 80, 80, [[5, 5, 20, 20]])
    donor = _sample(2, 80, 80, [[40, 40, 60, 64], [10, 50, 22, 70]])
    pasted = 0
    for seed in range(10):
        image, t = copy_paste(base, donor, np.random.default_rng(seed), max_boxes=2)
        assert t["boxes"][0].tolist() == [5, 5, 20, 20]  # what was there stays
        new = t["boxes"][1:]
        pasted += len(new)
        assert (t["labels"][1:] == 3).all() and not t["iscrowd"].any()
        for x1, y1, x2, y2 in new.tolist():
            cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
            np.testing.assert_array_equal(image[cy, cx], COLOURS[2])
            cover = max(0.0, min(x2, 20) - max(x1, 5)) * max(0.0, min(y2, 20) - max(y1, 5))
            assert cover / 225 < 0.3  # the box already there stays visible
    assert pasted >= 10


def test_mixer_checks_its_values_and_stops_at_the_end() -> None:
    with pytest.raises(ValueError, match="aug.mosaic_prob"):
        SampleMixer(mosaic_prob=1.5)
    mixer = SampleMixer(mosaic_prob=1.0, off_after_iter=90)
    assert mixer.active(0) and mixer.active(89) and not mixer.active(90)
    assert not SampleMixer().active(0)


@pytest.fixture(scope="module")
def good_ds(tmp_path_factory) -> CocoDetection:
    img_dir, ann = good_coco_dataset(tmp_path_factory.mktemp("mix"),
                                     [(64, 96)] * 6 + [(96, 64)] * 4)
    return CocoDetection(img_dir, ann)


def test_loader_with_mosaic_is_a_function_of_the_seed(good_ds) -> None:
    mixer = SampleMixer(mosaic_prob=1.0, copy_paste_prob=0.5, off_after_iter=6)

    def take(workers: int) -> list:
        loader = build_train_loader(good_ds, 2, seed=5, num_workers=workers, mixer=mixer)
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) == 8:
                return out
        return out

    ref, par = take(0), take(2)
    plain = build_train_loader(good_ds, 2, seed=5, num_workers=0)
    plain_batches = [b for _, b in zip(range(8), plain, strict=False)]
    for i, (a, b) in enumerate(zip(ref, par, strict=True)):
        for x, y in zip(a.images, b.images, strict=True):
            assert torch.equal(x, y)
        for s, t in zip(a.targets, b.targets, strict=True):
            assert torch.equal(s["boxes"], t["boxes"])
        if i >= 6:  # mixing is off from iteration 6: the plain loader's samples
            for x, y in zip(a.images, plain_batches[i].images, strict=True):
                assert torch.equal(x, y)
    assert any(len(t["boxes"]) > len(p["boxes"]) for b, pb in zip(ref[:6], plain_batches[:6],
                                                                   strict=True)
               for t, p in zip(b.targets, pb.targets, strict=True))


def test_aug_keys_build_the_mixer_or_name_the_key() -> None:
    from omegaconf import OmegaConf

    from rfcn.assembly.data import sample_mixer
    from rfcn.config import AugConfig, ConfigError

    aug = OmegaConf.structured(AugConfig)
    assert sample_mixer(aug, 100) is None  # off by default
    aug.mosaic_prob = 0.5
    mixer = sample_mixer(aug, 100)
    assert mixer is not None and mixer.off_after_iter == 90
    aug.copy_paste_prob = 2.0
    with pytest.raises(ConfigError, match=r"^aug.copy_paste_prob: 2.0 is not a probability"):
        sample_mixer(aug, 100)
